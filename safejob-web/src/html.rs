//! HTML building blocks of the dashboard: escaping, the page frame, tables, forms and the
//! server-rendered SVG charts (no JavaScript, nothing fetched from elsewhere).

use std::fmt::Write;

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};

use crate::csrf::CSRF_FIELD;

/// `text` with `& < > " '` escaped, safe inside element content and quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
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

/// `text` percent-encoded for a URL path segment or query value.
pub fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A time as the dashboard shows it.
pub fn time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// An optional time.
pub fn maybe_time(t: Option<&DateTime<Utc>>) -> String {
    t.map(time).unwrap_or_else(|| "—".into())
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#fafafa}\
nav{background:#223;padding:.6em 1em}nav a{color:#dde;margin-right:1em;text-decoration:none}\
nav a.on{color:#fff;font-weight:bold}main{padding:1em 1.5em}\
table{border-collapse:collapse;margin:.5em 0 1.5em;background:#fff}\
td,th{border:1px solid #ddd;padding:.3em .6em;text-align:left;font-size:.9em}\
th{background:#eef}.cards{display:flex;gap:1em;flex-wrap:wrap}\
.card{background:#fff;border:1px solid #ddd;padding:.6em 1em;min-width:6em}\
.card b{display:block;font-size:1.6em}.msg{background:#efe;border:1px solid #9c9;padding:.5em}\
.s-dead,.s-failed{color:#b00}.s-succeeded{color:#070}.s-running{color:#05a}\
form.inline{display:inline}button{cursor:pointer}svg{background:#fff;border:1px solid #ddd}";

/// The sections of the dashboard: (path, title).
pub const NAV: [(&str, &str); 9] = [
    ("/", "Overview"),
    ("/ui/queues", "Queues"),
    ("/ui/jobs", "Jobs"),
    ("/ui/dead", "Dead letters"),
    ("/ui/keys", "Keys in doubt"),
    ("/ui/schedules", "Schedules"),
    ("/ui/batches", "Batches"),
    ("/ui/actions", "Actions"),
    ("/ui/workers", "Workers"),
];

/// A full page: the frame with its navigation around `body`.
pub fn page(current: &str, title: &str, message: Option<&str>, body: &str) -> Response {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <link rel=\"icon\" href=\"data:,\"><title>{} · safejob</title><style>{STYLE}</style>\
         </head><body><nav>",
        escape(title)
    );
    for (path, name) in NAV {
        let on = if path == current { " class=\"on\"" } else { "" };
        let _ = write!(out, "<a href=\"{path}\"{on}>{name}</a>");
    }
    let _ = write!(out, "</nav><main><h1>{}</h1>", escape(title));
    if let Some(m) = message.filter(|m| !m.is_empty()) {
        let _ = write!(out, "<p class=\"msg\" id=\"message\">{}</p>", escape(m));
    }
    out.push_str(body);
    out.push_str("</main></body></html>");
    html(StatusCode::OK, out)
}

/// An HTML answer with the dashboard's security headers.
pub fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    r
}

/// A table; cells are HTML already (escape text before).
pub fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::from("<table><tr>");
    for h in head {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    if rows.is_empty() {
        let _ = write!(out, "<tr><td colspan=\"{}\">none</td></tr>", head.len());
    }
    out.push_str("</table>");
    out
}

/// A state, coloured.
pub fn state(s: &str) -> String {
    format!("<span class=\"s-{0}\">{0}</span>", escape(s))
}

/// A one-button POST form carrying the CSRF token.
pub fn button(action: &str, label: &str, token: &str, id: &str) -> String {
    format!(
        "<form class=\"inline\" method=\"post\" action=\"{}\">\
         <input type=\"hidden\" name=\"{CSRF_FIELD}\" value=\"{}\">\
         <button type=\"submit\" id=\"{}\">{}</button></form>",
        escape(action),
        escape(token),
        escape(id),
        escape(label)
    )
}

/// A line chart of `(time, value)` points as inline SVG.
pub fn line_chart(title: &str, unit: &str, points: &[(DateTime<Utc>, f64)]) -> String {
    let (w, h, pad) = (600.0, 160.0, 30.0);
    let mut out = format!(
        "<figure><figcaption>{}</figcaption><svg width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{0}\">",
        escape(title)
    );
    if points.len() < 2 {
        let _ = write!(
            out,
            "<text x=\"{pad}\" y=\"{}\">collecting samples…</text></svg></figure>",
            h / 2.0
        );
        return out;
    }
    let t0 = points[0].0.timestamp_millis() as f64;
    let t1 = points[points.len() - 1].0.timestamp_millis() as f64;
    let span = (t1 - t0).max(1.0);
    let max = points.iter().map(|p| p.1).fold(0.0_f64, f64::max).max(1e-9);
    let coords: Vec<String> = points
        .iter()
        .map(|(t, v)| {
            let x = pad + (t.timestamp_millis() as f64 - t0) / span * (w - 2.0 * pad);
            let y = h - pad - v / max * (h - 2.0 * pad);
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let _ = write!(
        out,
        "<polyline fill=\"none\" stroke=\"#35a\" stroke-width=\"2\" points=\"{}\"/>\
         <text x=\"4\" y=\"14\" font-size=\"11\">max {max:.2} {}</text>\
         <text x=\"{pad}\" y=\"{}\" font-size=\"11\">{}</text>\
         <text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{}</text></svg></figure>",
        coords.join(" "),
        escape(unit),
        h - 8.0,
        time(&points[0].0),
        w - pad,
        h - 8.0,
        time(&points[points.len() - 1].0),
    );
    out
}

/// A DAG as inline SVG: `nodes` are (id, label, state) in an order where each comes after its
/// dependencies; `edges` are (from, to) ids. Each node sits one column right of its deepest
/// dependency.
pub fn dag(nodes: &[(i64, String, String)], edges: &[(i64, i64)]) -> String {
    let mut depth: std::collections::HashMap<i64, usize> = Default::default();
    let mut rows_in: Vec<usize> = Vec::new();
    let mut place: std::collections::HashMap<i64, (usize, usize)> = Default::default();
    for (id, _, _) in nodes {
        let d = edges
            .iter()
            .filter(|(_, to)| to == id)
            .filter_map(|(from, _)| depth.get(from).map(|d| d + 1))
            .max()
            .unwrap_or(0);
        depth.insert(*id, d);
        if rows_in.len() <= d {
            rows_in.resize(d + 1, 0);
        }
        place.insert(*id, (d, rows_in[d]));
        rows_in[d] += 1;
    }
    let (bw, bh, gx, gy) = (150.0, 40.0, 60.0, 20.0);
    let cols = rows_in.len().max(1) as f64;
    let rows = rows_in.iter().copied().max().unwrap_or(1).max(1) as f64;
    let (w, h) = (cols * (bw + gx) + 20.0, rows * (bh + gy) + 20.0);
    let pos = |id: &i64| {
        place
            .get(id)
            .map(|(c, r)| (10.0 + *c as f64 * (bw + gx), 10.0 + *r as f64 * (bh + gy)))
    };
    let mut out = format!(
        "<svg width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"batch DAG\">"
    );
    for (from, to) in edges {
        if let (Some((x1, y1)), Some((x2, y2))) = (pos(from), pos(to)) {
            let _ = write!(
                out,
                "<line x1=\"{}\" y1=\"{}\" x2=\"{x2}\" y2=\"{}\" stroke=\"#888\"/>",
                x1 + bw,
                y1 + bh / 2.0,
                y2 + bh / 2.0
            );
        }
    }
    for (id, label, st) in nodes {
        if let Some((x, y)) = pos(id) {
            let fill = match st.as_str() {
                "succeeded" => "#dfd",
                "dead" => "#fdd",
                "cancelled" => "#eee",
                "running" => "#ddf",
                "blocked" => "#ffe",
                _ => "#fff",
            };
            let _ = write!(
                out,
                "<a href=\"/ui/jobs/{id}\"><rect x=\"{x}\" y=\"{y}\" width=\"{bw}\" height=\"{bh}\" \
                 rx=\"5\" fill=\"{fill}\" stroke=\"#555\"/>\
                 <text x=\"{}\" y=\"{}\" font-size=\"12\">{}</text>\
                 <text x=\"{}\" y=\"{}\" font-size=\"11\">{}</text></a>",
                x + 6.0,
                y + 16.0,
                escape(label),
                x + 6.0,
                y + 32.0,
                escape(st)
            );
        }
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(url_encode("a b/c?é"), "a%20b%2Fc%3F%C3%A9");
    }
}
