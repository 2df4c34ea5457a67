//! The page, compiled into the binary: no CDN, no build step, nothing fetched at run time.

/// A static file of the page: its content type and text.
pub fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/" | "/index.html" => Some((
            "text/html; charset=utf-8",
            include_str!("assets/index.html"),
        )),
        "/app.js" => Some((
            "text/javascript; charset=utf-8",
            include_str!("assets/app.js"),
        )),
        "/style.css" => Some(("text/css; charset=utf-8", include_str!("assets/style.css"))),
        _ => None,
    }
}
