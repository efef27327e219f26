// French and English. The language comes from the user's choice (kept in this
// browser), else from the browser's own preference. Patient statuses keep the French
// labels the API gives (they are the lab's vocabulary).

const STRINGS = {
  en: {
    skip: 'Skip to content', loading: 'Loading…', save: 'Save', saved: 'Saved.', create: 'Create', delete: 'Delete', close: 'Close',
    actions: 'Actions', 'lang.choose': 'Language',
    'nav.main': 'Main', 'nav.patients': 'Patients', 'nav.import': 'Import', 'nav.users': 'Users', 'nav.groups': 'Groups',
    'nav.audit': 'Audit', 'nav.explorer': 'Orthanc Explorer', 'nav.profile': 'My profile', 'nav.sessions': 'My sessions',
    'nav.signout': 'Sign out',
    'login.title': 'Sign in to Cohort', 'login.email': 'Email', 'login.password': 'Password', 'login.submit': 'Sign in',
    'login.missing': 'Enter your email and password.',
    'login.invalid': 'Wrong email or password.',
    'login.inactive': 'This account is inactive. Ask an administrator to reactivate it.',
    'login.throttled': 'Too many failed attempts. Try again in {minutes} min.',
    'login.busy': 'The server is busy. Try again in a few seconds.',
    'session.ended': 'Your session has ended (it expired or was revoked). Please sign in again.',
    'error.title': 'Something went wrong', 'error.network': 'The server could not be reached.',
    'stats.title': 'Figures', 'stats.patients': 'Patients',
    'patients.title': 'Patients', 'patients.search': 'Search', 'patients.search.placeholder': 'IPP, last or first name',
    'patients.status': 'Status', 'patients.status.all': 'All statuses', 'patients.sort': 'Sort by',
    'patients.count': '{n} patient(s)', 'patients.none': 'No patients yet. Import a study to start.',
    'patients.none.filtered': 'No patient matches.', 'patients.select': 'Select patient {ipp}', 'patients.selection': 'Selection',
    'patients.ipp': 'IPP', 'patients.name': 'Name', 'patients.dob': 'Date of birth', 'patients.group': 'Group',
    'patients.updated': 'Updated', 'patients.created': 'Created', 'patients.ungrouped': 'No group', 'patients.noname': '(no name)',
    'patients.export.selected': 'Export selection ({n})',
    'sort.updated': 'Recently updated', 'sort.created': 'Recently created', 'sort.name': 'Last name', 'sort.ipp': 'IPP', 'sort.status': 'Status',
    'pager.prev': 'Previous', 'pager.next': 'Next', 'pager.page': 'Page {page} of {pages}',
    'patient.status.change': 'Change status', 'patient.status.saved': 'Status set to “{label}”.',
    'patient.identity': 'Identity', 'patient.first': 'First name', 'patient.last': 'Last name',
    'patient.export.title': 'Export', 'patient.export': 'Export as ZIP', 'patient.admin': 'Administration',
    'patient.group.assign': 'Assign group', 'patient.delete': 'Delete this patient',
    'patient.purge': 'Also delete the DICOM data from Orthanc',
    'patient.delete.confirm': 'Delete patient {ipp}? This cannot be undone.', 'patient.deleted': 'Patient {ipp} deleted.',
    'patient.studies': 'Studies', 'patient.images': 'Images', 'patient.study': 'Study', 'patient.nostudies': 'No study.',
    'patient.noimages': 'No image.', 'patient.series': 'Series {modality} — {n} image(s)', 'patient.instance': 'Image {n}',
    'patient.nopreview': 'no preview', 'patient.showall': 'Show all ({n})', 'patient.dicom.download': 'Download DICOM',
    'study.date': 'Date', 'study.description': 'Description', 'study.modalities': 'Modalities', 'study.instances': 'Images',
    'export.preparing': 'Preparing the archive…', 'export.done': '{name} downloaded.', 'export.deidentify': 'De-identified',
    'import.title': 'Import DICOM', 'import.help': 'ZIP or tar archives, DICOM files, or a folder. Each upload is checked, then stored in Orthanc and the registry.',
    'import.drop': 'Drop ZIP, tar or DICOM files here, or a folder such as a CD\'s contents', 'import.choose': 'Choose files…',
    'import.chooseFolder': 'Choose a folder…',
    'import.progress': 'Upload of {name}', 'import.uploading': 'Uploading {name} ({size})…', 'import.processing': 'Storing {name}…',
    'import.done': 'Finished: {n} upload(s).', 'import.received': 'DICOM received', 'import.stored': 'Stored',
    'import.already': 'Already stored', 'import.failed': 'Failed', 'import.skipped': 'Skipped (not DICOM)',
    'import.patients': 'Patients:', 'import.new': 'new', 'import.entry': 'Entry', 'import.error': 'Error',
    'sessions.title': 'My sessions', 'sessions.help': 'One line per device where you are signed in. Revoking one signs that device out.',
    'sessions.device': 'Device', 'sessions.ip': 'Address', 'sessions.created': 'Created', 'sessions.seen': 'Last seen',
    'sessions.expires': 'Expires', 'sessions.current': 'this device', 'sessions.revoke': 'Revoke', 'sessions.revoked': 'Session revoked.',
    'profile.title': 'My profile', 'profile.identity': 'Identity', 'profile.email': 'Email', 'profile.password': 'Password',
    'profile.new': 'New password', 'profile.new.hint': '12 to 72 characters. Your other sessions will be signed out.',
    'profile.current': 'Current password', 'profile.current.hint': 'Required to change your email or password.',
    'profile.saved.password': 'Saved. Your other sessions were signed out.', 'profile.role': 'Role: {role}',
    'role.admin': 'administrator', 'role.user': 'user',
    'tokens.title': 'My API tokens', 'tokens.help': 'For scripts, never for a browser. A token is shown once.',
    'tokens.name': 'Name', 'tokens.scope': 'Scope', 'tokens.read': 'read', 'tokens.write': 'write', 'tokens.days': 'Valid for (days)',
    'tokens.new': 'New token', 'tokens.create': 'Create token', 'tokens.once': 'Copy this token now; it will not be shown again:',
    'tokens.none': 'No token.', 'tokens.used': 'Last used', 'tokens.revoked': 'Token revoked.',
    'users.title': 'Users', 'users.search': 'Search by email or name', 'users.role': 'Role', 'users.status': 'Status',
    'users.active': 'active', 'users.inactive': 'inactive', 'users.nogroup': 'No group', 'users.new': 'New user',
    'users.role.of': 'Role of {email}', 'users.status.of': 'Status of {email}', 'users.group.of': 'Group of {email}',
    'users.delete.confirm': 'Delete the account {email}? Its audit entries are kept.',
    'groups.title': 'Research groups', 'groups.new': 'New group', 'groups.name': 'Name', 'groups.members': 'Users',
    'groups.rename': 'Rename', 'groups.rename.label': 'Name of group {name}', 'groups.none': 'No group yet.',
    'groups.delete.confirm': 'Delete the group {name}?',
    'audit.title': 'Audit trail', 'audit.action': 'Action', 'audit.all': 'All actions', 'audit.user': 'User id',
    'audit.from': 'From', 'audit.to': 'To (included)', 'audit.filter': 'Filter', 'audit.csv': 'Export CSV',
    'audit.count': '{n} entries', 'audit.none': 'No entry.', 'audit.at': 'When', 'audit.actor': 'Who', 'audit.outcome': 'Outcome',
    'audit.resource': 'Resource', 'audit.details': 'Details', 'audit.system': 'system',
    'err.csrf_failed': 'Security check failed; reload the page.',
    'err.forbidden': 'You are not allowed to do this.',
    'err.not_found': 'Not found (or not visible to you).',
    'err.no_group': 'Your account has no research group yet: ask an administrator to add you to one.',
    'err.no_dicom': 'Nothing in this file is DICOM.',
    'err.invalid_zip': 'This ZIP archive is damaged or truncated; nothing was imported.',
    'err.zip_bomb': 'This archive inflates far beyond its size; it was refused.',
    'err.too_large': 'Too large for this server.',
    'err.unsupported_media_type': 'Unsupported file type.',
    'err.orthanc_unavailable': 'Orthanc is not answering. Try again later.',
    'err.database_unavailable': 'The database is not answering. Try again later.',
    'err.last_admin': 'The last active administrator cannot be removed or demoted.',
    'err.group_not_empty': 'This group still has users or patients.',
    'err.invalid_current_password': 'The current password is wrong.',
    'err.preview_unavailable': 'Orthanc cannot render a preview of this image.',
    'err.too_many_attempts': 'Too many attempts. Try again in {retry} min.',
    'err.busy': 'The server is busy. Try again in a few seconds.',
  },
  fr: {
    skip: 'Aller au contenu', loading: 'Chargement…', save: 'Enregistrer', saved: 'Enregistré.', create: 'Créer', delete: 'Supprimer',
    close: 'Fermer', actions: 'Actions', 'lang.choose': 'Langue',
    'nav.main': 'Principal', 'nav.patients': 'Patients', 'nav.import': 'Importer', 'nav.users': 'Utilisateurs', 'nav.groups': 'Groupes',
    'nav.audit': 'Audit', 'nav.explorer': 'Orthanc Explorer', 'nav.profile': 'Mon profil', 'nav.sessions': 'Mes sessions',
    'nav.signout': 'Se déconnecter',
    'login.title': 'Connexion à Cohort', 'login.email': 'Adresse e-mail', 'login.password': 'Mot de passe', 'login.submit': 'Se connecter',
    'login.missing': 'Saisissez votre adresse e-mail et votre mot de passe.',
    'login.invalid': 'Adresse e-mail ou mot de passe incorrect.',
    'login.inactive': 'Ce compte est désactivé. Demandez à un administrateur de le réactiver.',
    'login.throttled': 'Trop de tentatives échouées. Réessayez dans {minutes} min.',
    'login.busy': 'Le serveur est occupé. Réessayez dans quelques secondes.',
    'session.ended': 'Votre session a pris fin (expirée ou révoquée). Reconnectez-vous.',
    'error.title': 'Une erreur est survenue', 'error.network': 'Le serveur est injoignable.',
    'stats.title': 'Chiffres', 'stats.patients': 'Patients',
    'patients.title': 'Patients', 'patients.search': 'Rechercher', 'patients.search.placeholder': 'IPP, nom ou prénom',
    'patients.status': 'Statut', 'patients.status.all': 'Tous les statuts', 'patients.sort': 'Trier par',
    'patients.count': '{n} patient(s)', 'patients.none': 'Aucun patient. Importez une étude pour commencer.',
    'patients.none.filtered': 'Aucun patient ne correspond.', 'patients.select': 'Sélectionner le patient {ipp}', 'patients.selection': 'Sélection',
    'patients.ipp': 'IPP', 'patients.name': 'Nom', 'patients.dob': 'Date de naissance', 'patients.group': 'Groupe',
    'patients.updated': 'Modifié', 'patients.created': 'Créé', 'patients.ungrouped': 'Sans groupe', 'patients.noname': '(sans nom)',
    'patients.export.selected': 'Exporter la sélection ({n})',
    'sort.updated': 'Modifiés récemment', 'sort.created': 'Créés récemment', 'sort.name': 'Nom', 'sort.ipp': 'IPP', 'sort.status': 'Statut',
    'pager.prev': 'Précédent', 'pager.next': 'Suivant', 'pager.page': 'Page {page} sur {pages}',
    'patient.status.change': 'Changer le statut', 'patient.status.saved': 'Statut : « {label} ».',
    'patient.identity': 'Identité', 'patient.first': 'Prénom', 'patient.last': 'Nom',
    'patient.export.title': 'Export', 'patient.export': 'Exporter en ZIP', 'patient.admin': 'Administration',
    'patient.group.assign': 'Affecter le groupe', 'patient.delete': 'Supprimer ce patient',
    'patient.purge': 'Supprimer aussi les données DICOM dans Orthanc',
    'patient.delete.confirm': 'Supprimer le patient {ipp} ? Cette action est définitive.', 'patient.deleted': 'Patient {ipp} supprimé.',
    'patient.studies': 'Études', 'patient.images': 'Images', 'patient.study': 'Étude', 'patient.nostudies': 'Aucune étude.',
    'patient.noimages': 'Aucune image.', 'patient.series': 'Série {modality} — {n} image(s)', 'patient.instance': 'Image {n}',
    'patient.nopreview': 'pas d’aperçu', 'patient.showall': 'Tout afficher ({n})', 'patient.dicom.download': 'Télécharger le DICOM',
    'study.date': 'Date', 'study.description': 'Description', 'study.modalities': 'Modalités', 'study.instances': 'Images',
    'export.preparing': 'Préparation de l’archive…', 'export.done': '{name} téléchargé.', 'export.deidentify': 'Désidentifié',
    'import.title': 'Importer du DICOM', 'import.help': 'Archives ZIP ou tar, fichiers DICOM, ou un dossier. Chaque envoi est vérifié, puis enregistré dans Orthanc et le registre.',
    'import.drop': 'Déposez ici des fichiers ZIP, tar ou DICOM, ou un dossier (le contenu d\'un CD)', 'import.choose': 'Choisir des fichiers…',
    'import.chooseFolder': 'Choisir un dossier…',
    'import.progress': 'Envoi de {name}', 'import.uploading': 'Envoi de {name} ({size})…', 'import.processing': 'Enregistrement de {name}…',
    'import.done': 'Terminé : {n} envoi(s).', 'import.received': 'DICOM reçus', 'import.stored': 'Enregistrés',
    'import.already': 'Déjà présents', 'import.failed': 'En échec', 'import.skipped': 'Ignorés (pas DICOM)',
    'import.patients': 'Patients :', 'import.new': 'nouveau', 'import.entry': 'Élément', 'import.error': 'Erreur',
    'sessions.title': 'Mes sessions', 'sessions.help': 'Une ligne par appareil connecté. Révoquer une session déconnecte cet appareil.',
    'sessions.device': 'Appareil', 'sessions.ip': 'Adresse', 'sessions.created': 'Créée', 'sessions.seen': 'Dernière activité',
    'sessions.expires': 'Expire', 'sessions.current': 'cet appareil', 'sessions.revoke': 'Révoquer', 'sessions.revoked': 'Session révoquée.',
    'profile.title': 'Mon profil', 'profile.identity': 'Identité', 'profile.email': 'Adresse e-mail', 'profile.password': 'Mot de passe',
    'profile.new': 'Nouveau mot de passe', 'profile.new.hint': '12 à 72 caractères. Vos autres sessions seront déconnectées.',
    'profile.current': 'Mot de passe actuel', 'profile.current.hint': 'Nécessaire pour changer d’adresse e-mail ou de mot de passe.',
    'profile.saved.password': 'Enregistré. Vos autres sessions ont été déconnectées.', 'profile.role': 'Rôle : {role}',
    'role.admin': 'administrateur', 'role.user': 'utilisateur',
    'tokens.title': 'Mes jetons d’API', 'tokens.help': 'Pour les scripts, jamais pour un navigateur. Un jeton n’est affiché qu’une fois.',
    'tokens.name': 'Nom', 'tokens.scope': 'Portée', 'tokens.read': 'lecture', 'tokens.write': 'écriture', 'tokens.days': 'Validité (jours)',
    'tokens.new': 'Nouveau jeton', 'tokens.create': 'Créer le jeton', 'tokens.once': 'Copiez ce jeton maintenant ; il ne sera plus affiché :',
    'tokens.none': 'Aucun jeton.', 'tokens.used': 'Dernière utilisation', 'tokens.revoked': 'Jeton révoqué.',
    'users.title': 'Utilisateurs', 'users.search': 'Rechercher par e-mail ou nom', 'users.role': 'Rôle', 'users.status': 'Statut',
    'users.active': 'actif', 'users.inactive': 'désactivé', 'users.nogroup': 'Sans groupe', 'users.new': 'Nouvel utilisateur',
    'users.role.of': 'Rôle de {email}', 'users.status.of': 'Statut de {email}', 'users.group.of': 'Groupe de {email}',
    'users.delete.confirm': 'Supprimer le compte {email} ? Ses entrées d’audit sont conservées.',
    'groups.title': 'Groupes de recherche', 'groups.new': 'Nouveau groupe', 'groups.name': 'Nom', 'groups.members': 'Utilisateurs',
    'groups.rename': 'Renommer', 'groups.rename.label': 'Nom du groupe {name}', 'groups.none': 'Aucun groupe.',
    'groups.delete.confirm': 'Supprimer le groupe {name} ?',
    'audit.title': 'Journal d’audit', 'audit.action': 'Action', 'audit.all': 'Toutes les actions', 'audit.user': 'Id utilisateur',
    'audit.from': 'Du', 'audit.to': 'Au (inclus)', 'audit.filter': 'Filtrer', 'audit.csv': 'Exporter en CSV',
    'audit.count': '{n} entrées', 'audit.none': 'Aucune entrée.', 'audit.at': 'Quand', 'audit.actor': 'Qui', 'audit.outcome': 'Résultat',
    'audit.resource': 'Ressource', 'audit.details': 'Détails', 'audit.system': 'système',
    'err.csrf_failed': 'Échec du contrôle de sécurité ; rechargez la page.',
    'err.forbidden': 'Vous n’avez pas le droit de faire cela.',
    'err.not_found': 'Introuvable (ou non visible pour vous).',
    'err.no_group': 'Votre compte n’a pas encore de groupe de recherche : demandez à un administrateur de vous en attribuer un.',
    'err.no_dicom': 'Ce fichier ne contient aucun DICOM.',
    'err.invalid_zip': 'Cette archive ZIP est endommagée ou tronquée ; rien n’a été importé.',
    'err.zip_bomb': 'Cette archive se décompresse bien au-delà de sa taille ; elle a été refusée.',
    'err.too_large': 'Trop volumineux pour ce serveur.',
    'err.unsupported_media_type': 'Type de fichier non pris en charge.',
    'err.orthanc_unavailable': 'Orthanc ne répond pas. Réessayez plus tard.',
    'err.database_unavailable': 'La base de données ne répond pas. Réessayez plus tard.',
    'err.last_admin': 'Le dernier administrateur actif ne peut être supprimé ni rétrogradé.',
    'err.group_not_empty': 'Ce groupe a encore des utilisateurs ou des patients.',
    'err.invalid_current_password': 'Le mot de passe actuel est incorrect.',
    'err.preview_unavailable': 'Orthanc ne peut pas afficher d’aperçu de cette image.',
    'err.too_many_attempts': 'Trop de tentatives. Réessayez dans {retry} min.',
    'err.busy': 'Le serveur est occupé. Réessayez dans quelques secondes.',
  },
};

export const LANGS = [['fr', 'Français'], ['en', 'English']];
const KEY = 'cohort.lang';

function initial() {
  try {
    const saved = localStorage.getItem(KEY);
    if (saved && STRINGS[saved]) return saved;
  } catch (_) { /* storage disabled */ }
  const prefs = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || 'en'];
  for (const p of prefs) {
    const code = String(p).slice(0, 2).toLowerCase();
    if (STRINGS[code]) return code;
  }
  return 'en';
}

let current = initial();

export function lang() { return current; }

export function setLang(code) {
  if (!STRINGS[code]) return;
  current = code;
  try { localStorage.setItem(KEY, code); } catch (_) { /* storage disabled */ }
  document.documentElement.lang = code;
}

/// The text of `key` with `{name}` parameters filled in. Without a translation:
/// `fallback` when given (even null), else the key in brackets (the tests look for them).
export function t(key, params = {}, fallback) {
  let s = STRINGS[current][key] ?? STRINGS.en[key];
  if (s === undefined) return fallback !== undefined ? fallback : `⟦${key}⟧`;
  for (const [k, v] of Object.entries(params || {})) s = s.replaceAll(`{${k}}`, String(v));
  return s;
}
