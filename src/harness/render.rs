//! What experiments and reports look like outside the terminal: an HTML page per run (verdicts
//! next to observations, with the timeline pictures), a pod report's HTML page, and JUnit XML
//! for CI. Pure, so they are tested without a cluster.

use kube::ResourceExt;

use crate::crd::ProbeExperiment;
use crate::crd::experiment::ExperimentPhase;
use crate::harness::timeline::{Timeline, escape};

/// Whether an experiment ended Passed.
#[must_use]
pub fn passed(e: &ProbeExperiment) -> bool {
    e.status.as_ref().is_some_and(|s| s.phase == ExperimentPhase::Passed)
}

/// A pod's report as one HTML page: the chart, then every restart with measured vs expected.
#[must_use]
pub fn report_html(history: &crate::lifecycle::PodHistory, timeline: &Timeline) -> String {
    let mut page = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>podlife: {0}</title><style>body{{font-family:'DejaVu Sans',Arial,sans-serif;margin:24px}} td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px}} table{{border-collapse:collapse}}</style></head><body>\n<h1>{0}</h1>\n{1}\n",
        escape(&history.pod),
        timeline.render_svg()
    );
    page.push_str(
        "<table><tr><th>container</th><th>restart</th><th>measured</th><th>expected</th><th>announced</th><th>fits the curve</th></tr>\n",
    );
    for c in &history.containers {
        for r in &c.restarts {
            let secs = |s: Option<f64>| s.map_or("-".to_string(), crate::lifecycle::history::format_seconds);
            page.push_str(&format!(
                "<tr><td>{}</td><td>#{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                escape(&c.name),
                r.number,
                secs(r.measured_seconds),
                secs(Some(r.expected_seconds)),
                secs(r.announced_seconds),
                r.fits_curve.map_or("not measurable", |f| if f { "yes" } else { "NO" })
            ));
        }
    }
    page.push_str("</table></body></html>\n");
    page
}

/// An HTML page with a section per experiment: phase, a verdict table (expected next to
/// observed), actions and the SVG timeline. Pure, so it is tested without a cluster.
#[must_use]
pub fn html(experiments: &[ProbeExperiment], svgs: &[Option<String>]) -> String {
    let passed_count = experiments.iter().filter(|e| passed(e)).count();
    let mut page = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>podlife: {passed_count}/{} passed</title>\n<style>\n\
         body{{font-family:'DejaVu Sans',Arial,sans-serif;margin:24px;color:#222}} h1{{font-size:20px}} h2{{font-size:16px;margin-top:32px}}\n\
         table{{border-collapse:collapse;margin:8px 0}} td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;font-size:13px}}\n\
         .Passed,.ok{{color:#2e7d4f}} .Failed,.Error,.bad{{color:#b3261e}} .reason{{color:#b3261e}} ul{{font-size:13px}} svg{{max-width:100%;height:auto}}\n\
         </style></head><body>\n<h1>podlife: {passed_count} of {} experiments passed</h1>\n",
        experiments.len(),
        experiments.len()
    );
    for (i, e) in experiments.iter().enumerate() {
        let s = e.status.clone().unwrap_or_default();
        let name = escape(&e.name_any());
        page.push_str(&format!(
            "<h2 id=\"{name}\">{name} — <span class=\"{:?}\">{:?}</span> ({})</h2>\n",
            s.phase,
            s.phase,
            escape(&s.summary)
        ));
        if let Some(reason) = &s.reason {
            page.push_str(&format!("<p class=\"reason\">{}</p>\n", escape(reason)));
        }
        page.push_str("<table><tr><th></th><th>expectation</th><th>expected</th><th>observed</th></tr>\n");
        for v in &s.verdicts {
            let (mark, class) = if v.passed { ("✔", "ok") } else { ("✘", "bad") };
            page.push_str(&format!(
                "<tr class=\"{class}\"><td>{mark}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                escape(&v.name),
                escape(&v.expected),
                escape(&v.observed)
            ));
        }
        page.push_str("</table>\n");
        if !s.actions_done.is_empty() {
            page.push_str("<ul>");
            for a in &s.actions_done {
                page.push_str(&format!("<li>action at {}</li>", escape(a)));
            }
            page.push_str("</ul>\n");
        }
        match svgs.get(i).cloned().flatten() {
            Some(svg) => page.push_str(&svg),
            None => page.push_str("<p>(no timeline: the pod's PodLifecycle report was not found)</p>\n"),
        }
    }
    page.push_str("</body></html>\n");
    page
}

/// JUnit XML, as CI systems read it.
#[must_use]
pub fn junit(experiments: &[ProbeExperiment]) -> String {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut report = Report::new("podlife");
    for e in experiments {
        let s = e.status.clone().unwrap_or_default();
        let mut suite = TestSuite::new(e.name_any());
        if let (Some(a), Some(b)) = (s.started_at, s.finished_at) {
            suite.set_time(std::time::Duration::try_from(b.duration_since(a)).unwrap_or_default());
        }
        if let (ExperimentPhase::Error, Some(reason)) = (s.phase, &s.reason) {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
            status.set_message(reason.as_str());
            let mut case = TestCase::new("run", status);
            case.set_classname(e.name_any());
            suite.add_test_case(case);
        }
        for v in &s.verdicts {
            let status = if v.passed {
                TestCaseStatus::success()
            } else {
                let mut failed = TestCaseStatus::non_success(NonSuccessKind::Failure);
                failed.set_message(format!("expected {}, observed {}", v.expected, v.observed));
                failed
            };
            let mut case = TestCase::new(v.name.as_str(), status);
            case.set_classname(e.name_any());
            suite.add_test_case(case);
        }
        report.add_test_suite(suite);
    }
    // quick-junit drops what XML cannot carry (control characters from exec output, say).
    report.to_string().unwrap_or_else(|e| format!("<!-- cannot write JUnit XML: {e} -->\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::conformance::CONFORMANCE;

    #[test]
    fn junit_reports_each_expectation_and_escapes() {
        let mut exp = crate::crd::experiment::experiment_from_yaml_str(CONFORMANCE[0].1).unwrap();
        exp.status = Some(crate::crd::experiment::ExperimentStatus {
            phase: crate::crd::experiment::ExperimentPhase::Failed,
            verdicts: vec![
                crate::crd::experiment::Verdict { name: "a<b".into(), passed: true, expected: "1".into(), observed: "1".into() },
                crate::crd::experiment::Verdict { name: "c".into(), passed: false, expected: "\"x\"".into(), observed: "y & z".into() },
            ],
            ..Default::default()
        });
        let xml = junit(&[exp]);
        let suite = xml.lines().find(|l| l.trim_start().starts_with("<testsuite ")).unwrap();
        for count in [r#"tests="2""#, r#"failures="1""#, r#"errors="0""#] {
            assert!(suite.contains(count), "{count} in {xml}");
        }
        assert!(xml.contains("a&lt;b") && xml.contains("expected &quot;x&quot;, observed y &amp; z"), "{xml}");
    }

    #[test]
    fn junit_stays_valid_xml_whatever_the_exec_output_holds() {
        let mut exp = crate::crd::experiment::experiment_from_yaml_str(CONFORMANCE[0].1).unwrap();
        // An exec action's output, with the terminal's escape codes and a NUL, in an observation.
        let observed = "exit 1: \u{1b}[31mred\u{1b}[0m \u{0}nul \u{7}bell".to_string();
        exp.status = Some(crate::crd::experiment::ExperimentStatus {
            phase: ExperimentPhase::Failed,
            verdicts: vec![crate::crd::experiment::Verdict { name: "exec".into(), passed: false, expected: "exit 0".into(), observed }],
            ..Default::default()
        });
        let xml = junit(&[exp]);
        let forbidden: Vec<char> = xml.chars().filter(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')).collect();
        assert!(forbidden.is_empty(), "characters XML 1.0 cannot carry: {forbidden:?} in {xml}");
        assert!(xml.contains("red") && xml.contains("nul") && xml.contains("bell"), "{xml}");
    }

    #[test]
    fn html_shows_each_verdict_next_to_its_observation_and_embeds_the_picture() {
        let mut exp = crate::crd::experiment::experiment_from_yaml_str(CONFORMANCE[0].1).unwrap();
        exp.status = Some(crate::crd::experiment::ExperimentStatus {
            phase: crate::crd::experiment::ExperimentPhase::Failed,
            summary: "0/1".into(),
            verdicts: vec![crate::crd::experiment::Verdict {
                name: "restarts of <target>".into(),
                passed: false,
                expected: "0".into(),
                observed: "2".into(),
            }],
            actions_done: vec!["3.0s fail liveness: PUT /scripts/liveness -> ok".into()],
            ..Default::default()
        });
        let page = html(&[exp.clone(), exp], &[Some("<svg id=\"one\"></svg>".into()), None]);
        assert!(page.starts_with("<!DOCTYPE html>") && page.trim_end().ends_with("</html>"));
        assert!(page.contains("0 of 2 experiments passed"), "{page}");
        assert!(page.contains("<td>restarts of &lt;target&gt;</td><td>0</td><td>2</td>"), "{page}");
        assert!(page.contains("<svg id=\"one\">") && page.contains("no timeline"), "{page}");
        assert!(page.contains("action at 3.0s fail liveness"));
    }
}
