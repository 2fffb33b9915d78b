//! E2E results from a JUnit XML report (any runner that writes one: pytest, jest, go test).

/// (passed, failed, skipped) test cases of a JUnit XML file; a failure or error inside a
/// testcase fails it.
pub fn junit_counts(xml: &str) -> Result<(u32, u32, u32), String> {
    // A real XML parser: a truncated or hand-edited report is refused, not half-counted.
    let doc = roxmltree::Document::parse(xml).map_err(|e| format!("not well-formed XML: {e}"))?;
    let root = doc.root_element().tag_name().name();
    if root != "testsuites" && root != "testsuite" {
        return Err(format!(
            "not a JUnit XML report (root element <{root}>, expected <testsuites> or <testsuite>)"
        ));
    }
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for case in doc.descendants().filter(|n| n.has_tag_name("testcase")) {
        let child = |name: &str| case.children().any(|c| c.has_tag_name(name));
        if child("failure") || child("error") {
            failed += 1;
        } else if child("skipped") {
            skipped += 1;
        } else {
            passed += 1;
        }
    }
    Ok((passed, failed, skipped))
}

#[cfg(test)]
mod tests {
    use super::junit_counts;

    #[test]
    fn junit_counting() {
        let xml = r#"<testsuites><testsuite name="e2e" tests="4"><testcase name="a"/><testcase name="b"><failure message="x"/></testcase><testcase name="c"></testcase><testcase name="d"><skipped/></testcase></testsuite></testsuites>"#;
        assert_eq!(junit_counts(xml), Ok((2, 1, 1)));
        assert!(junit_counts("<html/>").is_err());
    }

    /// A report written by a real runner (pytest 9.2, `--junitxml`): 144 passed, one
    /// assertion failure, one error (recorded by pytest as a failure), one skip.
    #[test]
    fn junit_from_pytest() {
        let xml = include_str!("../../tests/fixtures/junit-pytest.xml");
        assert_eq!(junit_counts(xml), Ok((144, 2, 1)));
    }
}
