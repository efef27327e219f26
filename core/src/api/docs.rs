//! `GET /api/docs`: the OpenAPI document as a readable HTML page, rendered on the server
//! (no script, no CDN): every route with its parameters, body and answers, then every
//! schema with its fields.

use std::fmt::Write as _;
use std::sync::OnceLock;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::console::add_page_headers;

/// The API reference, readable in a browser.
#[utoipa::path(get, path = "/api/docs", tag = "health", responses((status = 200, description = "HTML page of the OpenAPI document", content_type = "text/html")))]
pub async fn docs() -> Response {
    static PAGE: OnceLock<String> = OnceLock::new();
    let page = PAGE.get_or_init(|| render(&serde_json::to_value(super::openapi()).unwrap_or(Value::Null)));
    let mut resp = page.as_str().into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    add_page_headers(h);
    resp
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// A schema in one line: `string`, `integer (int64)`, `[Patient]`, a link to a named one.
fn type_of(schema: &Value) -> String {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r);
        return format!("<a href=\"#schema-{0}\">{0}</a>", esc(name));
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(items) = schema.get(key).and_then(Value::as_array) {
            let parts: Vec<String> = items.iter().map(type_of).collect();
            return parts.join(if key == "allOf" { " &amp; " } else { " | " });
        }
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let parts: Vec<String> = values.iter().map(|v| format!("<code>{}</code>", esc(&v.to_string()))).collect();
        return format!("one of {}", parts.join(", "));
    }
    let ty = match schema.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" | "),
        _ => String::new(),
    };
    let mut out = if ty.contains("array") {
        format!("[{}]", schema.get("items").map(type_of).unwrap_or_default())
    } else if ty.is_empty() {
        "any".to_string()
    } else {
        esc(&ty)
    };
    if let Some(f) = schema.get("format").and_then(Value::as_str) {
        let _ = write!(out, " ({})", esc(f));
    }
    out
}

fn parameters(op: &Value, out: &mut String) {
    let Some(params) = op.get("parameters").and_then(Value::as_array).filter(|p| !p.is_empty()) else {
        return;
    };
    out.push_str("<table><thead><tr><th>Parameter</th><th>In</th><th>Type</th><th>Description</th></tr></thead><tbody>");
    for p in params {
        let required = if p.get("required").and_then(Value::as_bool).unwrap_or(false) { " <em>required</em>" } else { "" };
        let _ = write!(
            out,
            "<tr><td><code>{}</code>{required}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(str_of(p, "name")),
            esc(str_of(p, "in")),
            p.get("schema").map(type_of).unwrap_or_default(),
            esc(str_of(p, "description")),
        );
    }
    out.push_str("</tbody></table>");
}

fn contents(v: &Value) -> String {
    let Some(content) = v.get("content").and_then(Value::as_object) else {
        return String::new();
    };
    content
        .iter()
        .map(|(mime, c)| format!("<code>{}</code> {}", esc(mime), c.get("schema").map(type_of).unwrap_or_default()))
        .collect::<Vec<_>>()
        .join("<br>")
}

fn operation(path: &str, method: &str, op: &Value, out: &mut String) {
    let id = format!("{method}-{path}").replace(['/', '{', '}'], "_");
    let _ = write!(
        out,
        "<section class=\"op\" id=\"{id}\"><h3><span class=\"method {method}\">{}</span> <code>{}</code></h3>",
        method.to_uppercase(),
        esc(path)
    );
    for key in ["summary", "description"] {
        let text = str_of(op, key);
        let repeats_summary = key == "description" && text == str_of(op, "summary");
        if !text.is_empty() && !repeats_summary {
            let _ = write!(out, "<p>{}</p>", esc(text).replace("\n\n", "</p><p>"));
        }
    }
    if op.get("security").and_then(Value::as_array).is_some_and(|s| s.is_empty()) {
        out.push_str("<p class=\"note\">No authentication.</p>");
    }
    parameters(op, out);
    if let Some(body) = op.get("requestBody") {
        let _ = write!(out, "<p><strong>Body</strong>: {}</p>", contents(body));
    }
    if let Some(responses) = op.get("responses").and_then(Value::as_object) {
        out.push_str("<table><thead><tr><th>Status</th><th>Meaning</th><th>Body</th></tr></thead><tbody>");
        for (status, r) in responses {
            let _ = write!(out, "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", esc(status), esc(str_of(r, "description")), contents(r));
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</section>");
}

fn schema(name: &str, s: &Value, out: &mut String) {
    let _ = write!(out, "<section class=\"schema\" id=\"schema-{0}\"><h3>{0}</h3>", esc(name));
    let description = str_of(s, "description");
    if !description.is_empty() {
        let _ = write!(out, "<p>{}</p>", esc(description));
    }
    let required: Vec<&str> =
        s.get("required").and_then(Value::as_array).map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    match s.get("properties").and_then(Value::as_object) {
        Some(props) => {
            out.push_str("<table><thead><tr><th>Field</th><th>Type</th><th>Description</th></tr></thead><tbody>");
            for (field, p) in props {
                let req = if required.contains(&field.as_str()) { "" } else { " <em>optional</em>" };
                let _ = write!(
                    out,
                    "<tr><td><code>{}</code>{req}</td><td>{}</td><td>{}</td></tr>",
                    esc(field),
                    type_of(p),
                    esc(str_of(p, "description"))
                );
            }
            out.push_str("</tbody></table>");
        }
        None => {
            let _ = write!(out, "<p>{}</p>", type_of(s));
        }
    }
    out.push_str("</section>");
}

/// The whole page.
pub fn render(doc: &Value) -> String {
    let info = &doc["info"];
    let mut body = String::new();
    let mut toc = String::new();
    let tags: Vec<(String, String)> = doc["tags"]
        .as_array()
        .map(|t| t.iter().map(|t| (str_of(t, "name").to_string(), str_of(t, "description").to_string())).collect())
        .unwrap_or_default();
    let paths = doc["paths"].as_object().cloned().unwrap_or_default();
    for (tag, description) in &tags {
        let _ = write!(toc, "<li><a href=\"#tag-{0}\">{0}</a></li>", esc(tag));
        let _ = write!(body, "<h2 id=\"tag-{0}\">{0}</h2><p>{1}</p>", esc(tag), esc(description));
        for (path, item) in &paths {
            for method in ["get", "post", "put", "delete"] {
                let Some(op) = item.get(method) else { continue };
                let tagged = op.get("tags").and_then(Value::as_array).is_some_and(|t| t.iter().any(|x| x.as_str() == Some(tag)));
                if tagged {
                    operation(path, method, op, &mut body);
                }
            }
        }
    }
    body.push_str("<h2 id=\"schemas\">Schemas</h2>");
    toc.push_str("<li><a href=\"#schemas\">Schemas</a></li>");
    if let Some(schemas) = doc["components"]["schemas"].as_object() {
        for (name, s) in schemas {
            schema(name, s, &mut body);
        }
    }
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} reference</title><link rel=\"stylesheet\" href=\"/ui/docs.css\"><link rel=\"icon\" href=\"/ui/favicon.svg\"></head>\
         <body><header><h1>{title} <small>{version}</small></h1><p>{description}</p>\
         <p>Errors are <code>{{\"error\": {{\"code\", \"message\"}}}}</code>. Browsers authenticate with the <code>access_token</code> cookie \
         and send <code>X-CSRF-Token</code> on every write; scripts send <code>Authorization: Bearer</code>. \
         The machine-readable document is <a href=\"/api/openapi.json\">/api/openapi.json</a>; the console is at <a href=\"/ui/\">/ui/</a>.</p>\
         <nav aria-label=\"Sections\"><ul>{toc}</ul></nav></header><main>{body}</main></body></html>",
        title = esc(str_of(info, "title")),
        version = esc(str_of(info, "version")),
        description = esc(str_of(info, "description")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_lists_routes_and_schemas_and_escapes_text() {
        let doc = serde_json::json!({
            "info": {"title": "T", "version": "1", "description": "<b>x</b>"},
            "tags": [{"name": "auth", "description": "Login"}],
            "paths": {"/api/auth/login": {"post": {"tags": ["auth"], "summary": "Log in",
                "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/LoginBody"}}}},
                "responses": {"200": {"description": "OK"}}}}},
            "components": {"schemas": {"LoginBody": {"type": "object", "required": ["email"],
                "properties": {"email": {"type": "string"}, "n": {"type": ["integer", "null"], "format": "int64"}}}}}
        });
        let html = render(&doc);
        assert!(html.contains("<code>/api/auth/login</code>"));
        assert!(html.contains("href=\"#schema-LoginBody\""));
        assert!(html.contains("id=\"schema-LoginBody\""));
        assert!(html.contains("&lt;b&gt;x&lt;/b&gt;"));
        assert!(!html.contains("<b>x</b>"));
        assert!(!html.contains("<script"));
    }
}
