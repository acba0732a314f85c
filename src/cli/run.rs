//! `kubectl podlife run` and `suite`: the preflight, creating the experiments, a bounded
//! scheduler with a progress line, waiting for verdicts, and the results in the chosen format
//! and files.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::{Api, Client};

use super::report::find_report;
use super::{
    ACCEPT_TIMEOUT, COVERED_ACCEPT_TIMEOUT, DELETE_TIMEOUT, Error, LATER_ACCEPT_TIMEOUT, MIN_ACCEPT_AFTER_CREATE, Result, preflight,
};
use crate::crd::PodLifecycle;
use crate::harness::conformance;
use crate::harness::render::{html, junit, passed};
use crate::harness::timeline::Timeline;

/// Output formats of `run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RunFormat {
    /// Progress, verdict tables and timelines.
    Human,
    /// One JSON object per experiment: its status.
    Json,
    /// JUnit XML: a testsuite per run, a testcase per expectation.
    Junit,
}

/// Reads ProbeExperiments from YAML files (several documents per file are fine).
///
/// # Errors
/// A file cannot be read or is not a ProbeExperiment; the message names the file.
pub fn load_experiments(paths: &[std::path::PathBuf]) -> Result<Vec<crate::crd::ProbeExperiment>, String> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let value = serde_yaml::Value::deserialize(doc).map_err(|e| format!("{} document {}: {e}", path.display(), i + 1))?;
            if value.is_null() {
                continue;
            }
            let exp = crate::crd::experiment::experiment_from_yaml(value)
                .map_err(|e| format!("{} document {}: not a ProbeExperiment: {e}", path.display(), i + 1))?;
            out.push(exp);
        }
    }
    if out.is_empty() {
        return Err("no ProbeExperiment found in the given files".into());
    }
    Ok(out)
}

/// Runs experiments: checks the setup, (re)creates each, waits for its verdict with a progress
/// line, prints.
///
/// # Errors
/// A preflight check fails, no operator accepts the experiments, the API refuses one (the
/// CRD's validation message is passed on), a wait runs out, or output fails.
pub async fn run(
    client: &Client,
    namespace: &str,
    experiments: Vec<crate::crd::ProbeExperiment>,
    format: RunFormat,
    width: usize,
    options: &RunOptions,
    out: &mut impl Write,
) -> Result<Outcome> {
    let checked = preflight(client, &[namespace], uses_target_image(&experiments.iter().collect::<Vec<_>>()), options).await?;
    let placed = experiments.into_iter().map(|e| (namespace.to_string(), e)).collect();
    let finished = run_placed(client, placed, format, width, options, checked.accept, out).await.map_err(|e| with_hint(e, checked.hint))?;
    options.write(client, &finished).await?;
    Ok(Outcome::of(&finished))
}

/// How to run: at most `parallel` experiments at once (0: all), and the files to write besides
/// the chosen output (JUnit XML, an HTML page with the pictures).
#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    pub parallel: usize,
    pub junit: Option<std::path::PathBuf>,
    pub html: Option<std::path::PathBuf>,
    /// A directory to write each experiment's evidence to, with the reports it was judged on.
    pub evidence: Option<std::path::PathBuf>,
    /// Skip the check that the target image is on a node.
    pub skip_image_check: bool,
    /// What this run created, for cleaning up after an interrupt or a failed preflight.
    pub created: Created,
}

/// The experiments and namespaces a run created, shared with whoever cleans up after it.
#[derive(Debug, Default, Clone)]
pub struct Created(Arc<Mutex<CreatedLists>>);

#[derive(Debug, Default)]
struct CreatedLists {
    experiments: Vec<(String, String)>,
    namespaces: Vec<String>,
}

impl Created {
    fn experiment(&self, namespace: &str, name: &str) {
        crate::lock(&self.0).experiments.push((namespace.to_string(), name.to_string()));
    }

    fn namespace(&self, namespace: &str) {
        crate::lock(&self.0).namespaces.push(namespace.to_string());
    }

    fn forget_namespaces(&self) {
        crate::lock(&self.0).namespaces.clear();
    }

    /// Whether anything was created.
    #[must_use]
    pub fn any(&self) -> bool {
        let lists = crate::lock(&self.0);
        !lists.experiments.is_empty() || !lists.namespaces.is_empty()
    }

    /// Deletes what was created (experiments take their pods and Jobs with them; namespaces
    /// everything in them) and waits for it to go, up to `limit`. Returns a sentence saying
    /// what was deleted, or exactly what was left behind.
    pub async fn clean_up(&self, client: &Client, limit: Duration) -> String {
        use k8s_openapi::api::core::v1::Namespace;
        use kube::api::DeleteParams;
        let (experiments, namespaces) = {
            let lists = crate::lock(&self.0);
            (lists.experiments.clone(), lists.namespaces.clone())
        };
        let namespaces_api: Api<Namespace> = Api::all(client.clone());
        for ns in &namespaces {
            // The namespace is this run's own: its pods need no grace period.
            let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), ns);
            let now = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::background() };
            let _ = pods.delete_collection(&now, &kube::api::ListParams::default()).await;
            let _ = namespaces_api.delete(ns, &DeleteParams::background()).await;
        }
        // Experiments in namespaces being deleted go with them.
        let loose: Vec<_> = experiments.iter().filter(|(ns, _)| !namespaces.contains(ns)).cloned().collect();
        for (ns, name) in &loose {
            let _ = Api::<crate::crd::ProbeExperiment>::namespaced(client.clone(), ns).delete(name, &DeleteParams::background()).await;
        }
        let deadline = Instant::now() + limit;
        loop {
            // Gone only when the apiserver says so (404); an error leaves it unconfirmed.
            let mut left = Vec::new();
            for ns in &namespaces {
                if !matches!(namespaces_api.get_opt(ns).await, Ok(None)) {
                    left.push(format!("namespace {ns}"));
                }
            }
            for (ns, name) in &loose {
                if !matches!(Api::<crate::crd::ProbeExperiment>::namespaced(client.clone(), ns).get_opt(name).await, Ok(None)) {
                    left.push(format!("experiment {ns}/{name}"));
                }
            }
            if left.is_empty() {
                return format!("deleted {} experiment(s) and {} namespace(s) this run created", experiments.len(), namespaces.len());
            }
            if Instant::now() >= deadline {
                return format!("could not confirm the deletion within {} s of: {}", limit.as_secs(), left.join(", "));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// What this run created, in one line, for when it is left in place.
    #[must_use]
    pub fn describe(&self) -> String {
        let lists = crate::lock(&self.0);
        let mut items: Vec<String> = lists.namespaces.iter().map(|n| format!("namespace {n}")).collect();
        items.extend(
            lists.experiments.iter().filter(|(ns, _)| !lists.namespaces.contains(ns)).map(|(ns, name)| format!("experiment {ns}/{name}")),
        );
        if items.is_empty() { "nothing".into() } else { items.join(", ") }
    }
}

/// How a run of experiments ended, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every experiment passed (exit 0).
    Passed,
    /// At least one failed: the kubelet did not do what it claimed (exit 1).
    Failed,
    /// At least one could not run (phase Error; exit 2).
    CouldNotRun,
}

impl Outcome {
    fn of(finished: &[crate::crd::ProbeExperiment]) -> Outcome {
        use crate::crd::experiment::ExperimentPhase;
        let phase = |e: &crate::crd::ProbeExperiment| e.status.as_ref().map(|s| s.phase).unwrap_or_default();
        if finished.iter().any(|e| phase(e) == ExperimentPhase::Error) {
            Outcome::CouldNotRun
        } else if finished.iter().all(passed) {
            Outcome::Passed
        } else {
            Outcome::Failed
        }
    }
}

/// The checks before anything is created: the CRDs and the default target image on a node
/// (when a container names none) stop the run; operators installed in the cluster that do not
/// cover a namespace only give the hint shown if no operator accepts the experiments (one
/// running outside the cluster cannot be seen, and may cover it).
async fn preflight(client: &Client, namespaces: &[&str], needs_target_image: bool, options: &RunOptions) -> Result<Checked> {
    let since = Instant::now();
    let first = namespaces.first().copied().unwrap_or("default");
    preflight::crds(client, first).await?;
    let installs = preflight::installs(client).await.unwrap_or_default();
    let hint = namespaces.iter().find_map(|ns| preflight::coverage(&installs, ns).err());
    if needs_target_image && !options.skip_image_check {
        let covering = installs.iter().find(|i| namespaces.iter().all(|ns| i.covers(ns)));
        let image = covering.and_then(|i| i.target_image.clone()).unwrap_or_else(preflight::default_target_image);
        preflight::image(client, &image).await?;
    }
    // An installed operator is seen to cover every namespace: give it time for a lease, and if
    // it still says nothing, point at it.
    let covering = installs.iter().find(|i| i.ready && namespaces.iter().all(|ns| i.covers(ns)));
    let (accept, hint) = match (covering, hint) {
        (Some(i), None) => (
            COVERED_ACCEPT_TIMEOUT,
            Some(preflight::Missing {
                what: format!("the operator in {} covers {} but did not answer", i.namespace, namespaces.join(", ")),
                fix: format!(
                    "kubectl -n {} logs deploy/{} --tail=50   (is it the leader? kubectl -n {} get lease)",
                    i.namespace, i.deployment, i.namespace
                ),
            }),
        ),
        (_, hint) => (ACCEPT_TIMEOUT, hint),
    };
    Ok(Checked { hint, accept: AcceptBy { since, window: accept } })
}

/// What the preflight learned: the hint for a "not accepted" error, and how long to wait.
struct Checked {
    hint: Option<preflight::Missing>,
    accept: AcceptBy,
}

/// When the operator must have accepted the first experiments of a run: `window` after
/// `since`, but never sooner than [`MIN_ACCEPT_AFTER_CREATE`] after an experiment's creation.
#[derive(Debug, Clone, Copy)]
struct AcceptBy {
    since: Instant,
    window: Duration,
}

impl AcceptBy {
    fn deadline(self, created: Instant) -> Instant {
        (self.since + self.window).max(created + MIN_ACCEPT_AFTER_CREATE)
    }
}

/// Attaches the preflight's hint to a "not accepted" error.
fn with_hint(e: Error, hint: Option<preflight::Missing>) -> Error {
    match e {
        Error::NotAccepted { namespace, name, seconds, hint: None } => Error::NotAccepted { namespace, name, seconds, hint },
        other => other,
    }
}

/// Whether some container of some experiment leaves its image to the operator's default.
fn uses_target_image(experiments: &[&crate::crd::ProbeExperiment]) -> bool {
    experiments.iter().any(|e| {
        e.spec
            .pod
            .containers
            .iter()
            .chain(e.spec.pod.init_containers.iter().flatten())
            .any(|c| c.image.as_deref().unwrap_or_default().is_empty())
    })
}

impl RunOptions {
    async fn write(&self, client: &Client, finished: &[crate::crd::ProbeExperiment]) -> Result<()> {
        if let Some(path) = &self.junit {
            std::fs::write(path, junit(finished))?;
        }
        if let Some(path) = &self.html {
            write_html(client, finished, path).await?;
        }
        if let Some(dir) = &self.evidence {
            write_evidence(finished, dir)?;
        }
        Ok(())
    }
}

/// Writes `DIR/NAME.json` per finished experiment: the experiment with its status, whose
/// evidence holds the reports as they were judged. Enough to judge it again offline (the
/// conformance fixtures of `tests/mutation.rs` are these files).
fn write_evidence(finished: &[crate::crd::ProbeExperiment], dir: &std::path::Path) -> Result<()> {
    use kube::ResourceExt;
    std::fs::create_dir_all(dir)?;
    for e in finished {
        let mut experiment = e.clone();
        // Bookkeeping of the apiserver, not evidence: left out so fixtures diff cleanly.
        experiment.metadata = kube::api::ObjectMeta { name: experiment.metadata.name.clone(), ..Default::default() };
        std::fs::write(dir.join(format!("{}.json", e.name_any())), serde_json::to_string_pretty(&experiment)? + "\n")?;
    }
    Ok(())
}

/// (Re)creates one experiment: a finished one of the same name is replaced.
async fn start_experiment(client: &Client, namespace: &str, mut exp: crate::crd::ProbeExperiment, created: &Created) -> Result<()> {
    use kube::ResourceExt;
    use kube::api::{DeleteParams, PostParams};
    let api: Api<crate::crd::ProbeExperiment> = Api::namespaced(client.clone(), namespace);
    let name = exp.name_any();
    if api.get_opt(&name).await?.is_some() {
        api.delete(&name, &DeleteParams::foreground()).await?;
        let deadline = Instant::now() + DELETE_TIMEOUT;
        while api.get_opt(&name).await?.is_some() {
            if Instant::now() >= deadline {
                return Err(Error::StillDeleting {
                    what: format!("experiment {namespace}/{name} from an earlier run"),
                    seconds: DELETE_TIMEOUT.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    exp.metadata.namespace = Some(namespace.to_string());
    exp.metadata.resource_version = None;
    exp.status = None;
    // Recorded before it is sent: an interrupt during the call must not leave it unaccounted.
    created.experiment(namespace, &name);
    api.create(&PostParams::default(), &exp).await?;
    Ok(())
}

/// The progress line while experiments run, on stderr: redrawn in place on a terminal; in a
/// log (CI), one line whenever it changes and otherwise every 30 s.
struct Progress {
    enabled: bool,
    terminal: bool,
    width: usize,
    last: String,
    last_print: Option<std::time::Instant>,
}

impl Progress {
    fn new(enabled: bool, width: usize) -> Self {
        use std::io::IsTerminal;
        Progress { enabled, terminal: std::io::stderr().is_terminal(), width, last: String::new(), last_print: None }
    }

    fn show(&mut self, elapsed: std::time::Duration, line: &str) {
        if !self.enabled {
            return;
        }
        let text = format!("[{:>4}s] {line}", elapsed.as_secs());
        if self.terminal {
            let fitted: String = text.chars().take(self.width.saturating_sub(1)).collect();
            eprint!("\r{fitted:<w$}", w = self.width.saturating_sub(1));
            return;
        }
        // In a log the seconds always change; compare the rest, so a line means news.
        let changed = line.split(" · running").next() != self.last.split(" · running").next();
        if changed || self.last_print.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(30)) {
            eprintln!("{text}");
            self.last = line.to_string();
            self.last_print = Some(std::time::Instant::now());
        }
    }

    fn done(&self) {
        if self.enabled && self.terminal {
            eprintln!();
        }
    }
}

/// Runs experiments, each in its own namespace, and returns them with their final status.
/// Every wait is bounded: the operator must accept each experiment (write its status) within
/// [`ACCEPT_TIMEOUT`] for the first ones started, and finish it within its timeout plus a
/// minute.
async fn run_placed(
    client: &Client,
    placed: Vec<(String, crate::crd::ProbeExperiment)>,
    format: RunFormat,
    width: usize,
    options: &RunOptions,
    first_accept: AcceptBy,
    out: &mut impl Write,
) -> Result<Vec<crate::crd::ProbeExperiment>> {
    let parallel = options.parallel;
    use crate::crd::ProbeExperiment;
    use kube::ResourceExt;

    // Longest first, so that a bounded number running at once does not make the slowest wait.
    let mut queue: std::collections::VecDeque<(String, ProbeExperiment)> = {
        let mut v = placed;
        v.sort_by_key(|(_, e)| std::cmp::Reverse(e.spec.duration_seconds));
        v.into()
    };
    let total = queue.len();
    let limit = if parallel == 0 { usize::MAX } else { parallel };
    // (namespace, name, when it was created, when the operator must have accepted it)
    let mut active: Vec<(String, String, Instant, Instant)> = Vec::new();
    let mut first_wave = true;
    let started = std::time::Instant::now();
    let mut finished: Vec<ProbeExperiment> = Vec::new();
    let mut progress = Progress::new(format == RunFormat::Human, width);
    while finished.len() < total {
        while active.len() < limit
            && let Some((namespace, exp)) = queue.pop_front()
        {
            let name = exp.name_any();
            start_experiment(client, &namespace, exp, &options.created).await?;
            let created = Instant::now();
            let accept_by = if first_wave { first_accept.deadline(created) } else { created + LATER_ACCEPT_TIMEOUT };
            active.push((namespace, name, created, accept_by));
        }
        first_wave = false;
        let mut running = Vec::new();
        let mut still_active = Vec::new();
        for (namespace, name, created, accept_by) in active.drain(..) {
            let exp = Api::<ProbeExperiment>::namespaced(client.clone(), &namespace).get(&name).await?;
            let phase = exp.status.as_ref().map(|s| s.phase).unwrap_or_default();
            if exp.status.is_none() && Instant::now() >= accept_by {
                let seconds = accept_by.duration_since(created).as_secs_f64().round() as u64;
                return Err(Error::NotAccepted { namespace, name, seconds, hint: None });
            }
            let limit = Duration::from_secs(u64::from(exp.spec.timeout_seconds) + 60);
            if phase.is_final() {
                finished.push(exp);
            } else if Instant::now() >= accept_by + limit {
                return Err(Error::Unfinished { namespace, name, seconds: u64::from(exp.spec.timeout_seconds) });
            } else {
                let ran = exp.status.as_ref().and_then(|s| s.started_at).map_or(0, |t| jiff::Timestamp::now().duration_since(t).as_secs());
                running.push(format!("{name} {ran}s/{}s", exp.spec.duration_seconds));
                still_active.push((namespace, name, created, accept_by));
            }
        }
        active = still_active;
        let names_len = total;
        let ok = finished.iter().filter(|e| passed(e)).count();
        let mut line = format!("{}/{names_len} finished ({ok} passed, {} not)", finished.len(), finished.len() - ok);
        if !queue.is_empty() {
            line.push_str(&format!(", {} queued", queue.len()));
        }
        if let Some(first) = running.first() {
            line.push_str(&format!(" · running: {first}"));
            if running.len() > 1 {
                line.push_str(&format!(" and {} more", running.len() - 1));
            }
        }
        progress.show(started.elapsed(), &line);
        if finished.len() < total {
            // Quickly at first, so that a missing operator is noticed within the accept timeout.
            let pause = if started.elapsed() < first_accept.window * 2 { Duration::from_millis(250) } else { Duration::from_secs(1) };
            tokio::time::sleep(pause).await;
        }
    }
    progress.done();
    match format {
        RunFormat::Json => {
            for e in &finished {
                writeln!(out, "{}", serde_json::to_string(&json_of(e))?)?;
            }
        }
        RunFormat::Junit => write!(out, "{}", junit(&finished))?,
        RunFormat::Human => {
            for e in &finished {
                print_human(client, e, width, out).await?;
            }
        }
    }
    Ok(finished)
}

/// One experiment's verdicts (expected next to observed), actions and timeline.
async fn print_human(client: &Client, e: &crate::crd::ProbeExperiment, width: usize, out: &mut impl Write) -> Result<()> {
    use kube::ResourceExt;
    let s = e.status.clone().unwrap_or_default();
    writeln!(out, "\n{} — {:?} ({}){}", e.name_any(), s.phase, s.summary, s.reason.as_ref().map_or(String::new(), |r| format!(": {r}")))?;
    for v in &s.verdicts {
        writeln!(out, "  {} {:<40} expected {:<28} observed {}", if v.passed { "✔" } else { "✘" }, v.name, v.expected, v.observed)?;
    }
    for a in &s.actions_done {
        writeln!(out, "  · action at {a}")?;
    }
    if let Some(timeline) = experiment_timeline(client, e).await {
        write!(out, "{}", timeline.render_text(width))?;
    }
    Ok(())
}

/// Shows an experiment that ran (or still runs): its verdicts and timeline.
///
/// # Errors
/// There is no such experiment, or output fails.
pub async fn show(client: &Client, namespace: &str, name: &str, width: usize, out: &mut impl Write) -> Result<Outcome> {
    let api: Api<crate::crd::ProbeExperiment> = Api::namespaced(client.clone(), namespace);
    let e = api.get(name).await?;
    print_human(client, &e, width, out).await?;
    let phase = e.status.as_ref().map(|s| s.phase).unwrap_or_default();
    Ok(if phase.is_final() { Outcome::of(std::slice::from_ref(&e)) } else { Outcome::Passed })
}

/// The timeline of an experiment's pod (the first pod of a Job): the PodLifecycle report its
/// verdicts were judged on, with what podlife-target recorded from its stored evidence; `None`
/// if there is no report.
pub async fn experiment_timeline(client: &Client, e: &crate::crd::ProbeExperiment) -> Option<Timeline> {
    use kube::ResourceExt;
    let s = e.status.clone().unwrap_or_default();
    let ns = e.namespace().unwrap_or_default();
    let end = s.finished_at.unwrap_or_else(jiff::Timestamp::now);
    let marks = s.evidence.as_ref().map(crate::harness::evidence::timeline_marks).unwrap_or_default();
    // A Deployment's pods on one axis, as judged.
    if let Some(ev) = s.evidence.as_ref()
        && let Some(d) = &ev.deployment
        && !ev.pods.is_empty()
    {
        let title = s.deployment_name.clone().unwrap_or_else(|| e.name_any());
        return Some(crate::harness::rollout::timeline(&format!("Deployment/{title}"), &ev.pods, d, end));
    }
    // The report as it was judged; else (too large to keep, or still running) the live one.
    if let Some(judged) = s.evidence.as_ref().and_then(|ev| ev.pods.first()) {
        return Some(Timeline::from_history(judged, end).with_target_marks(&marks));
    }
    let report = match (&s.report, &s.pod_name) {
        (Some(uid), _) => Api::<PodLifecycle>::namespaced(client.clone(), &ns).get(uid).await.ok()?,
        (None, Some(pod)) => find_report(client, &ns, pod).await.ok()?,
        (None, None) => return None,
    };
    Some(Timeline::from_history(&report.status?, end).with_target_marks(&marks))
}

/// Writes one self-contained HTML page: per experiment its verdicts and its timeline picture.
///
/// # Errors
/// The file cannot be written.
pub async fn write_html(client: &Client, experiments: &[crate::crd::ProbeExperiment], path: &std::path::Path) -> Result<()> {
    let mut pictures = Vec::new();
    for e in experiments {
        pictures.push(experiment_timeline(client, e).await.map(|t| t.render_svg()));
    }
    std::fs::write(path, html(experiments, &pictures))?;
    Ok(())
}

fn json_of(e: &crate::crd::ProbeExperiment) -> serde_json::Value {
    use kube::ResourceExt;
    serde_json::json!({"name": e.name_any(), "status": e.status})
}

/// Runs the conformance suite (without its slow cases if `skip_slow`): every case in its own
/// new namespace, or all of them in `in_namespace` (one the operator covers). Prints the
/// verdicts (or JSON/JUnit), writes the files in `options`, deletes the namespaces it created,
/// and returns (passed, failed, outcome).
///
/// # Errors
/// `filter` picks no case (or only slow ones, with `skip_slow`), a preflight check fails, no
/// operator accepts the cases, a namespace or experiment cannot be created, or a wait runs out.
pub async fn suite(
    client: &Client,
    filter: Option<&str>,
    skip_slow: bool,
    in_namespace: Option<&str>,
    format: RunFormat,
    options: &RunOptions,
    out: &mut impl Write,
) -> Result<(usize, usize, Outcome)> {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{DeleteParams, PostParams};
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let cases: Vec<(String, crate::crd::ProbeExperiment)> = conformance::cases(filter, skip_slow)?
        .into_iter()
        .map(|(name, exp)| (in_namespace.map_or_else(|| format!("podlife-conformance-{name}"), str::to_string), exp))
        .collect();
    let targets: Vec<&str> = {
        let mut v: Vec<&str> = cases.iter().map(|(ns, _)| ns.as_str()).collect();
        v.dedup();
        v
    };
    let checked = preflight(client, &targets, uses_target_image(&cases.iter().map(|(_, e)| e).collect::<Vec<_>>()), options).await?;
    if in_namespace.is_none() {
        for (ns, _) in &cases {
            if namespaces.get_opt(ns).await?.is_some() {
                namespaces.delete(ns, &DeleteParams::default()).await?;
                let deadline = Instant::now() + DELETE_TIMEOUT;
                while namespaces.get_opt(ns).await?.is_some() {
                    if Instant::now() >= deadline {
                        return Err(Error::StillDeleting {
                            what: format!("namespace {ns} from an earlier run"),
                            seconds: DELETE_TIMEOUT.as_secs(),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            let object: Namespace =
                serde_json::from_value(serde_json::json!({"metadata": {"name": ns, "labels": {"podlife.io/conformance": "true",
                    // The cases must pass where pods are held to the strictest level.
                    "pod-security.kubernetes.io/enforce": "restricted"}}}))?;
            options.created.namespace(ns);
            namespaces.create(&PostParams::default(), &object).await?;
        }
        // Pods need the namespace's default ServiceAccount before they are admitted.
        for (ns, _) in &cases {
            let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), ns);
            for _ in 0..100 {
                if sas.get_opt("default").await?.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // Deleting an earlier run's namespaces may have taken long: the window starts now.
    let accept = AcceptBy { since: Instant::now(), ..checked.accept };
    let finished = run_placed(client, cases, format, 100, options, accept, out).await.map_err(|e| with_hint(e, checked.hint))?;
    options.write(client, &finished).await?;
    let ok = finished.iter().filter(|e| passed(e)).count();
    let failed = finished.len() - ok;
    if format == RunFormat::Human {
        writeln!(out, "\nconformance: {ok} passed, {failed} failed")?;
    }
    let created = crate::lock(&options.created.0).namespaces.clone();
    for ns in created {
        let _ = namespaces.delete(&ns, &DeleteParams::background()).await;
    }
    options.created.forget_namespaces();
    Ok((ok, failed, Outcome::of(&finished)))
}
