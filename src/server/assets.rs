//! The built-in live board (server layer): static files embedded in the binary and served by
//! [`super::http`] at `/`. The board is `web/board/` (hand-written HTML and JS) plus
//! `web/board/quotecast.js`, the TypeScript client built by `npm run build:board` in
//! `clients/js` and committed, so building the server needs no Node; CI checks that the
//! committed bundle matches its source.

/// `(path, content type, body)` for every embedded file.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_bytes!("../../web/board/index.html"),
    ),
    (
        "/index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../web/board/index.html"),
    ),
    (
        "/board.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/board/board.js"),
    ),
    (
        "/quotecast.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/board/quotecast.js"),
    ),
];

/// The content type and body of the embedded file at `path`, if there is one.
pub(crate) fn get(path: &str) -> Option<(&'static str, &'static [u8])> {
    FILES
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|&(_, ct, body)| (ct, body))
}

#[cfg(test)]
mod tests {
    use super::get;

    #[test]
    fn index_loads_the_client_bundle() {
        let (ct, body) = get("/").expect("index");
        assert!(ct.starts_with("text/html"));
        let html = std::str::from_utf8(body).expect("utf-8");
        assert!(html.contains("/board.js") && html.contains("/quotecast.js"));
        let (_, board) = get("/board.js").expect("board.js");
        assert!(std::str::from_utf8(board)
            .expect("utf-8")
            .contains("from \"/quotecast.js\""));
        assert!(get("/quotecast.js").is_some());
        assert!(get("/nope").is_none());
    }
}
