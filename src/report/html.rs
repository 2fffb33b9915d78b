//! The daily report as one HTML page.

/// One self-contained page: the report as HTML (pulldown-cmark) with the charts inline.
/// Raw HTML in the markdown (a service's words inside evidence or a reason) is shown as text.
pub fn html(md: &str, charts: &[(String, String, String)]) -> String {
    use pulldown_cmark::{Event, Options, Parser};
    // The chart images of the markdown file are replaced by the inline SVGs below.
    let text: String = md
        .lines()
        .filter(|l| !l.starts_with("## Charts") && !l.starts_with("!["))
        .map(|l| format!("{l}\n"))
        .collect();
    let parser = Parser::new_ext(&text, Options::ENABLE_TASKLISTS | Options::ENABLE_TABLES).map(
        |e| match e {
            Event::Html(h) | Event::InlineHtml(h) => Event::Text(h),
            e => e,
        },
    );
    let mut body = String::new();
    pulldown_cmark::html::push_html(&mut body, parser);
    body += "<h2>Charts</h2>\n";
    for (_, title, svg) in charts {
        body += &format!(
            "<figure><figcaption>{}</figcaption>{svg}</figure>\n",
            crate::report::esc(title)
        );
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>DHI Staging Validation Report</title>\n<style>{STYLE}</style></head>\n<body>\n{body}</body></html>\n"
    )
}

/// One self-contained page of a markdown document whose images name SVG files written
/// beside it: each such image is replaced by the SVG inline (nothing is fetched); raw HTML in
/// the markdown shows as text, as in the daily report.
pub fn page(title: &str, md: &str, inline: &[(String, String)]) -> String {
    use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
    let mut in_image = false;
    let parser = Parser::new_ext(md, Options::ENABLE_TASKLISTS | Options::ENABLE_TABLES)
        .filter_map(|e| match e {
            Event::Start(Tag::Image { dest_url, .. }) => {
                in_image = true;
                let svg = inline.iter().find(|(f, _)| *f == dest_url.as_ref());
                Some(match svg {
                    Some((_, svg)) => Event::Html(format!("<figure>{svg}</figure>").into()),
                    None => Event::Text(format!("[image {dest_url}]").into()),
                })
            }
            Event::End(TagEnd::Image) => {
                in_image = false;
                None
            }
            _ if in_image => None,
            Event::Html(h) | Event::InlineHtml(h) => Some(Event::Text(h)),
            e => Some(e),
        });
    let mut body = String::new();
    pulldown_cmark::html::push_html(&mut body, parser);
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{}</title>\n<style>{STYLE}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .5em;text-align:left;vertical-align:top}}pre{{background:#f6f6f6;padding:.6em;overflow-x:auto}}</style></head>\n<body>\n{body}</body></html>\n",
        crate::report::esc(title)
    )
}

const STYLE: &str = "body{font-family:sans-serif;max-width:900px;margin:2em auto;padding:0 1em;color:#222}h1{font-size:1.6em}h2{border-bottom:1px solid #ccc}figure{margin:1em 0}figure svg{width:100%;height:auto}li{margin:.2em 0}ul{padding-left:1.4em}";

#[cfg(test)]
mod tests {
    #[test]
    fn the_html_page_shows_raw_html_from_the_markdown_as_text() {
        let md = "# Report\n\n- [x] **ok** <script>alert(1)</script>\n- [ ] <b>x</b>\n";
        let page = super::html(md, &[]);
        assert!(page.contains("<strong>ok</strong>"), "{page}");
        assert!(
            page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{page}"
        );
        assert!(
            !page.contains("<script>") && !page.contains("<b>"),
            "{page}"
        );
        assert!(page.contains("type=\"checkbox\""), "task lists: {page}");
    }
}
