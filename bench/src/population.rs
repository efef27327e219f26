//! A realistic patient registry of any size, built by bulk SQL through the core's own
//! store (`Db::insert_patient_rows`, which derives the folded search text exactly as the
//! API does), never through millions of HTTP calls.
//!
//! What it looks like: about 250 French family names drawn with a Zipf-like law (the
//! commonest, Martin, is about 2% of the registry, like "martin" in a French hospital's
//! search box), plus a long tail of 50,000 rare made-up names (a fifth of the patients,
//! a handful each); accented names and given names; three IPP formats; the four statuses
//! in unequal shares; 20 research groups of unequal sizes, one holding 1% of the
//! registry (the scoped user's), and 5% ungrouped. Everything is deterministic (a fixed
//! seed), so two builds of the same size are the same registry.

use std::time::Instant;

use anyhow::Context;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use cohort_core::domain::PatientStatus;
use cohort_core::store::patients::PatientRow;
use cohort_core::store::{Backend, Store};

/// The common name every bench asks for.
pub const COMMON_NAME: &str = "martin";
/// The group holding 1% of the registry.
pub const SCOPED_GROUP: &str = "Étude PRISME (1 %)";

/// Family names, commonest first (INSEE's list, roughly, with its accents and particles).
const FAMILY: &[&str] = &[
    "Martin",
    "Bernard",
    "Thomas",
    "Petit",
    "Robert",
    "Richard",
    "Durand",
    "Dubois",
    "Moreau",
    "Laurent",
    "Simon",
    "Michel",
    "Lefèbvre",
    "Leroy",
    "Roux",
    "David",
    "Bertrand",
    "Morel",
    "Fournier",
    "Girard",
    "Bonnet",
    "Dupont",
    "Lambert",
    "Fontaine",
    "Rousseau",
    "Vincent",
    "Muller",
    "Lefèvre",
    "Faure",
    "André",
    "Mercier",
    "Blanc",
    "Guérin",
    "Boyer",
    "Garnier",
    "Chevalier",
    "François",
    "Legrand",
    "Gauthier",
    "Garcia",
    "Perrin",
    "Robin",
    "Clément",
    "Morin",
    "Nicolas",
    "Henry",
    "Roussel",
    "Mathieu",
    "Gautier",
    "Masson",
    "Marchand",
    "Duval",
    "Denis",
    "Dumont",
    "Marie",
    "Lemaire",
    "Noël",
    "Meyer",
    "Dufour",
    "Meunier",
    "Brun",
    "Blanchard",
    "Giraud",
    "Joly",
    "Rivière",
    "Lucas",
    "Brunet",
    "Gaillard",
    "Barbier",
    "Arnaud",
    "Gérard",
    "Roche",
    "Renard",
    "Schmitt",
    "Roy",
    "Leroux",
    "Colin",
    "Vidal",
    "Caron",
    "Picard",
    "Roger",
    "Fabre",
    "Aubert",
    "Lemoine",
    "Renaud",
    "Dumas",
    "Lacroix",
    "Olivier",
    "Philippe",
    "Bourgeois",
    "Pierre",
    "Benoît",
    "Rey",
    "Leclerc",
    "Payet",
    "Rolland",
    "Leclercq",
    "Guillaume",
    "Lecomte",
    "Lopez",
    "Jean",
    "Dupuy",
    "Guillot",
    "Hubert",
    "Berger",
    "Carpentier",
    "Sanchez",
    "Dupuis",
    "Moulin",
    "Louis",
    "Deschamps",
    "Huet",
    "Vasseur",
    "Perez",
    "Boucher",
    "Fleury",
    "Royer",
    "Klein",
    "Jacquet",
    "Adam",
    "Paris",
    "Poirier",
    "Marty",
    "Aubry",
    "Guyot",
    "Carré",
    "Charles",
    "Renault",
    "Charpentier",
    "Ménard",
    "Maillard",
    "Baron",
    "Bertin",
    "Bailly",
    "Hervé",
    "Schneider",
    "Fernandez",
    "Le Gall",
    "Collet",
    "Léger",
    "Bouvier",
    "Julien",
    "Prévost",
    "Millet",
    "Perrot",
    "Daniel",
    "Le Roux",
    "Cousin",
    "Germain",
    "Breton",
    "Besson",
    "Langlois",
    "Rémy",
    "Le Goff",
    "Pelletier",
    "Lévêque",
    "Perrier",
    "Leblanc",
    "Barré",
    "Lebrun",
    "Marchal",
    "Weber",
    "Mallet",
    "Hamon",
    "Boulanger",
    "Jacob",
    "Monnier",
    "Michaud",
    "Rodriguez",
    "Guichard",
    "Gillet",
    "Étienne",
    "Grondin",
    "Poulain",
    "Tessier",
    "Chevallier",
    "Collin",
    "Chauvin",
    "Da Silva",
    "Bouchet",
    "Gay",
    "Lemaître",
    "Bénard",
    "Maréchal",
    "Humbert",
    "Reynaud",
    "Antoine",
    "Hoarau",
    "Perret",
    "Barthélemy",
    "Cordier",
    "Pichon",
    "Lejeune",
    "Gilbert",
    "Lamy",
    "Delaunay",
    "Pasquier",
    "Carlier",
    "Laporte",
    "Gonzalez",
    "Martinez",
    "Nguyen",
    "Bouvet",
    "Texier",
    "Lebon",
    "Chauvet",
    "Raynaud",
    "Dubreuil",
    "Hoareau",
    "Poulet",
    "Sauvage",
    "Bégué",
    "Ollivier",
    "Devaux",
    "Vallée",
    "Jourdan",
    "Bousquet",
    "Le Corre",
    "Gros",
    "Mathis",
    "Ferrand",
    "Laine",
    "Hébert",
    "Navarro",
    "Camus",
    "Barre",
    "Jouan",
    "Tanguy",
    "Lemonnier",
    "Marion",
    "Cohen",
    "Delmas",
    "Courtois",
    "Thibault",
    "Pons",
    "Guillou",
    "Benard",
    "Riviere",
    "Godard",
    "Lagarde",
    "Müller",
    "Núñez",
    "O'Neill",
    "Dos Santos",
    "Ben Ahmed",
    "N'Diaye",
    "Saint-Pierre",
    "Mérieux",
    "Chrétien",
    "Lesage",
    "Hamel",
    "Lévy",
    "Aubin",
    "Bigot",
    "Bœuf",
    "Gaël",
    "Jégou",
    "Pâris",
];

/// Given names, commonest first.
const GIVEN: &[&str] = &[
    "Marie",
    "Jean",
    "Pierre",
    "Michel",
    "Nathalie",
    "Isabelle",
    "Philippe",
    "Sylvie",
    "Catherine",
    "Alain",
    "Françoise",
    "Nicolas",
    "Christophe",
    "Patrick",
    "Christine",
    "Monique",
    "Stéphane",
    "Valérie",
    "Sandrine",
    "Éric",
    "Frédéric",
    "Laurent",
    "Céline",
    "Véronique",
    "Jacques",
    "Julien",
    "Sébastien",
    "David",
    "Nicole",
    "Anne",
    "Jacqueline",
    "Daniel",
    "Thomas",
    "Martine",
    "Chantal",
    "Olivier",
    "Camille",
    "Léa",
    "Hugo",
    "Chloé",
    "Louis",
    "Manon",
    "Jules",
    "Inès",
    "Théo",
    "Zoé",
    "Lucas",
    "Emma",
    "Gabriel",
    "Jade",
    "Raphaël",
    "Louise",
    "Arthur",
    "Alice",
    "Adam",
    "Lina",
    "Paul",
    "Rose",
    "Nathan",
    "Anna",
    "Tom",
    "Mila",
    "Noah",
    "Julia",
    "Ethan",
    "Lou",
    "Sacha",
    "Agathe",
    "Victor",
    "Margaux",
    "Maël",
    "Élise",
    "Côme",
    "Éloïse",
    "Hélène",
    "Geneviève",
    "Gérard",
    "Bernard",
    "René",
    "André",
    "Joël",
    "Noémie",
    "Anaïs",
    "Maëlle",
    "Loïc",
    "Aurélie",
    "Mégane",
    "Jérôme",
    "Benoît",
    "Cécile",
    "Thérèse",
    "Josiane",
    "Raymonde",
    "Mohamed",
    "Fatima",
    "Yasmine",
    "Karim",
    "Nguyen Van",
    "Sofia",
    "Aïcha",
    "Joëlle",
];

/// Shares of the four statuses, in `PatientStatus::ALL` order.
const STATUS_SHARES: [f64; 4] = [0.10, 0.15, 0.45, 0.30];

/// How many patients get a made-up rare family name, and how many such names exist.
const TAIL_SHARE: f64 = 0.20;
const TAIL_NAMES: u32 = 50_000;

/// A small deterministic generator (SplitMix64): the registry must be the same on every
/// build, whatever the `rand` version.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Cumulative weights for a draw by binary search.
struct Weighted(Vec<f64>);

impl Weighted {
    fn new(weights: impl IntoIterator<Item = f64>) -> Self {
        let mut acc = 0.0;
        let mut cumulative: Vec<f64> = weights
            .into_iter()
            .map(|w| {
                acc += w;
                acc
            })
            .collect();
        for c in &mut cumulative {
            *c /= acc;
        }
        Weighted(cumulative)
    }

    /// Zipf-like: the k-th (from 0) weighs 1 / (k + 1 + offset).
    fn zipf(n: usize, offset: f64) -> Self {
        Self::new((0..n).map(|k| 1.0 / (k as f64 + 1.0 + offset)))
    }

    fn draw(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.0.partition_point(|c| *c <= u).min(self.0.len() - 1)
    }
}

/// A made-up family name, from syllables (some accented): `tail_name(k)` is the same
/// for a given `k`. The first syllable pairs are chosen so that none contains "martin".
pub fn tail_name(k: u32) -> String {
    const A: &[&str] = &["Ker", "Lan", "Bré", "Quil", "Tré", "Gour", "Pen", "Mor", "Cas", "Vau", "Ro", "Sal", "Bor", "Dal", "Fé", "Ga"];
    const B: &[&str] = &["va", "zel", "gou", "nec", "bri", "lou", "mé", "ran", "do", "chè", "pi", "sau", "tu", "vio", "lé", "ca"];
    const C: &[&str] = &["quet", "lec", "ard", "ou", "ès", "ic", "aud", "ier", "on", "elle", "oz", "as", "eau", "ic'h", "an", "y"];
    const D: &[&str] = &["", "in", "ec", "ot", "ault", "ard", "", "ère", "is", "", "et", "ay", "", "ol"];
    let k = k as usize;
    let (a, r) = (k % A.len(), k / A.len());
    let (b, r) = (r % B.len(), r / B.len());
    let (c, r) = (r % C.len(), r / C.len());
    let d = r % D.len();
    format!("{}{}{}{}", A[a], B[b], C[c], D[d])
}

/// Three IPP formats, unique per patient: 9 digits (a permutation of the patient's
/// number), `IPP` and 8 digits, and `CHU-year-number`.
fn external_id(i: u32, format: u64) -> String {
    match format {
        0 => format!("4{:08}", (u64::from(i) * 7919) % 100_000_000),
        1 => format!("IPP{i:08}"),
        _ => format!("CHU-{}-{i:07}", 2005 + i % 20),
    }
}

/// The IPP prefix the bench searches for: it fixes all but the last three digits, so it
/// matches about 333 patients (a third of 1,000 numbers are in that format).
pub fn ipp_prefix(n: u32) -> String {
    format!("IPP{:05}", (n / 2) / 1_000)
}

/// The rare name the bench searches for: exactly ten patients bear it, whatever the
/// registry's size (from 10 patients up); no other name contains it.
pub const RARE_NAME: &str = "Quérébeuf";

/// What was built.
pub struct Built {
    pub seconds: f64,
    /// The groups, in creation order: `(id, name)`; the first is [`SCOPED_GROUP`].
    pub groups: Vec<(i64, String)>,
}

/// Groups: the scoped one (1%), then 19 of Zipf-like sizes; 5% of patients have none.
const GROUPS: &[&str] = &[
    SCOPED_GROUP,
    "Neuro-oncologie",
    "Cardiologie",
    "Pneumologie",
    "Urgences",
    "Pédiatrie",
    "Radiothérapie",
    "Imagerie ostéo-articulaire",
    "Sénologie",
    "Hépato-gastro",
    "Neurologie vasculaire",
    "Néphrologie",
    "Rhumatologie",
    "ORL",
    "Dermatologie",
    "Gériatrie",
    "Maxillo-facial",
    "Ophtalmologie",
    "Endocrinologie",
    "Essai CT-LUNG",
];

/// Builds `n` patients in the database at `url` (already migrated), in transactions of
/// 10,000 rows.
pub async fn build(url: &str, n: u32) -> anyhow::Result<Built> {
    let started = Instant::now();
    let store = Store::connect(url).await?;
    let mut groups = Vec::new();
    {
        let mut db = store.conn().await?;
        for name in GROUPS {
            let g = match db.group_by_name(name).await? {
                Some(g) => g,
                None => db.insert_group(name).await?,
            };
            groups.push((g.id, g.name));
        }
    }
    let family = Weighted::zipf(FAMILY.len(), 16.0);
    let given = Weighted::zipf(GIVEN.len(), 8.0);
    let status = Weighted::new(STATUS_SHARES);
    // 1% scoped, 5% ungrouped, the rest Zipf-like over the other 19 groups.
    let others = Weighted::zipf(GROUPS.len() - 1, 2.0);
    let start = Utc.with_ymd_and_hms(2015, 1, 1, 0, 0, 0).single().expect("date");
    let span_secs = 10 * 365 * 86_400_i64;
    let now = cohort_core::store::now();
    let mut rng = Rng(0x00C0_4047_2026);
    let mut i = 0u32;
    while i < n {
        let batch = 10_000.min(n - i);
        let mut rows = Vec::with_capacity(batch as usize);
        for _ in 0..batch {
            i += 1;
            rows.push(patient(i, n, &mut rng, &family, &given, &status, &others, &groups, start, span_secs, now));
        }
        let mut tx = store.begin().await?;
        tx.insert_patient_rows(&rows).await?;
        tx.commit().await?;
        if i % 100_000 == 0 {
            eprintln!("    {i} patients ({:.0} s)", started.elapsed().as_secs_f64());
        }
    }
    if store.backend() == Backend::Postgres {
        // As autovacuum would after such a load: without statistics PostgreSQL plans a
        // common name's page as a bitmap scan and a sort of every match (2.1 s at 1M)
        // instead of a walk along the sort's index (3 ms); without the visibility map a
        // page deep in the list fetches every row it passes over (0.38 s, not 0.09 s).
        store.conn().await?.vacuum_analyze_patients().await?;
    }
    store.close().await;
    Ok(Built { seconds: started.elapsed().as_secs_f64(), groups })
}

/// The groups of a registry [`build`] filled before, as it returns them.
pub async fn groups(url: &str) -> anyhow::Result<Vec<(i64, String)>> {
    let store = Store::connect(url).await?;
    let mut db = store.conn().await?;
    let mut groups = Vec::new();
    for name in GROUPS {
        let g = db.group_by_name(name).await?.with_context(|| format!("no group {name:?}: build the registry first"))?;
        groups.push((g.id, g.name));
    }
    drop(db);
    store.close().await;
    Ok(groups)
}

#[allow(clippy::too_many_arguments)]
fn patient(
    i: u32,
    n: u32,
    rng: &mut Rng,
    family: &Weighted,
    given: &Weighted,
    status: &Weighted,
    others: &Weighted,
    groups: &[(i64, String)],
    start: DateTime<Utc>,
    span_secs: i64,
    now: DateTime<Utc>,
) -> PatientRow {
    let last_name = match rng.unit() {
        _ if i % (n / 10).max(1) == 7 % (n / 10).max(1) => Some(RARE_NAME.to_string()),
        u if u < 0.005 => None,
        u if u < 0.005 + TAIL_SHARE => Some(tail_name(rng.below(u64::from(TAIL_NAMES)) as u32)),
        _ => Some(FAMILY[family.draw(rng)].to_string()),
    };
    let first_name = if rng.unit() < 0.02 { None } else { Some(GIVEN[given.draw(rng)].to_string()) };
    let group_id = match rng.unit() {
        u if u < 0.01 => Some(groups[0].0),
        u if u < 0.06 => None,
        _ => Some(groups[1 + others.draw(rng)].0),
    };
    // Created in order over ten years; updated some time later (most soon, some years on).
    let created_at = start + Duration::seconds(span_secs * i64::from(i) / i64::from(n.max(1)) + rng.below(3600) as i64);
    let later = Duration::seconds((rng.unit().powi(3) * 3.0 * 365.0 * 86_400.0) as i64);
    let updated_at = (created_at + later).min(now);
    let birth = NaiveDate::from_ymd_opt(1930, 1, 1).expect("date") + Duration::days(rng.below(90 * 365) as i64);
    PatientRow {
        id: 0,
        external_id: external_id(i, rng.below(3)),
        orthanc_patient_id: None,
        dicom_study_uid: None,
        status: PatientStatus::ALL[status.draw(rng)],
        first_name,
        last_name,
        date_of_birth: Some(birth),
        group_id,
        created_at,
        updated_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_intended_law() {
        let family = Weighted::zipf(FAMILY.len(), 16.0);
        let mut rng = Rng(7);
        let draws = 200_000;
        let martins = (0..draws).filter(|_| FAMILY[family.draw(&mut rng)] == "Martin").count();
        let share = martins as f64 / f64::from(draws) * (1.0 - TAIL_SHARE);
        assert!((0.015..0.025).contains(&share), "Martin is {share:.4} of the registry");
        assert!(!(0..TAIL_NAMES).any(|k| tail_name(k).to_lowercase().contains(COMMON_NAME)));
        let rare = cohort_core::domain::fold_for_search(RARE_NAME);
        assert!(!FAMILY.iter().chain(GIVEN).any(|f| cohort_core::domain::fold_for_search(f).contains(&rare)));
        assert!(!(0..TAIL_NAMES).any(|k| cohort_core::domain::fold_for_search(&tail_name(k)).contains(&rare)));
        assert_ne!(tail_name(1), tail_name(2));
    }
}
