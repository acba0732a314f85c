//! kubectl-podlife: reads podlife's reports and runs experiments. `report POD` prints a pod's
//! timeline; `run` and `suite` run experiments after a preflight; `doctor` checks the setup.

pub mod complete;
pub mod connect;
pub mod doctor;
pub mod list;
pub mod preflight;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::ListParams;
use kube::{Api, Client};

use crate::crd::PodLifecycle;
use crate::harness::timeline::{Timeline, escape};

/// Errors of the CLI. Each says which pod and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no PodLifecycle report for pod {pod} in namespace {namespace}; is the pod tracked (label podlife.io/track=true) and the operator running?"
    )]
    NoReport { pod: String, namespace: String },
    #[error("kubernetes API")]
    Kube(#[from] kube::Error),
    #[error("writing output")]
    Io(#[from] std::io::Error),
    #[error("encoding JSON")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Preflight(#[from] preflight::Missing),
    #[error(
        "no podlife operator with experiments enabled picked up experiment {name} in namespace {namespace} within {seconds} s{}",
        why_not_accepted(namespace, hint.as_ref())
    )]
    NotAccepted { namespace: String, name: String, seconds: u64, hint: Option<preflight::Missing> },
    #[error(
        "experiment {name} in {namespace} did not finish within its timeout ({seconds} s) and a minute more; is the operator still running?"
    )]
    Unfinished { namespace: String, name: String, seconds: u64 },
    #[error("{what} was still being deleted after {seconds} s")]
    StillDeleting { what: String, seconds: u64 },
}

fn why_not_accepted(namespace: &str, hint: Option<&preflight::Missing>) -> String {
    // `hint` says what the installs showed: one not covering the namespace, or a covering one
    // that stayed silent.
    match hint {
        Some(m) => format!(": {}\n  fix: {}", m.what, m.fix),
        None => format!(
            "\n  fix: install the operator with experiments for {namespace}: helm install podlife charts/podlife --namespace podlife-system --create-namespace --set experiments.enabled=true (or run podlife-operator --experiments)"
        ),
    }
}

/// An error and its causes, as one line: "what failed: why: why".
#[must_use]
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// How long `run` and `suite` wait for the operator to accept the first experiments they
/// create before concluding that no operator covers the namespace, counted from the start of
/// the checks (slow checks on a busy apiserver must not stretch what the user waits). The
/// operator accepts one by writing its status as soon as its watch delivers it (well under a
/// second here).
pub const ACCEPT_TIMEOUT: Duration = Duration::from_secs(3);
/// However slow the checks were, the operator gets at least this long after an experiment's
/// creation to accept it.
const MIN_ACCEPT_AFTER_CREATE: Duration = Duration::from_secs(2);
/// The same for experiments started later (a suite's queue): the operator is known to be there,
/// so this only bounds the wait.
const LATER_ACCEPT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait when an installed, ready operator covers the namespace: it may be a standby
/// taking over a lease its predecessor could not release (15 s), as after `helm uninstall`
/// removes the operator's permissions together with its pod.
const COVERED_ACCEPT_TIMEOUT: Duration = Duration::from_secs(20);
/// The longest wait for something being deleted (an earlier run's experiment, a namespace).
const DELETE_TIMEOUT: Duration = Duration::from_secs(120);

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Output formats of `report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A terminal timeline and the restart table.
    Human,
    /// The report's status as JSON.
    Json,
    /// An SVG Gantt chart.
    Svg,
    /// An HTML page with the SVG chart and the restart table.
    Html,
}

/// Finds the newest report of `pod` in `namespace` (a recreated pod has a new report).
///
/// # Errors
/// None exists, or the API call fails.
pub async fn find_report(client: &Client, namespace: &str, pod: &str) -> Result<PodLifecycle> {
    let api: Api<PodLifecycle> = Api::namespaced(client.clone(), namespace);
    let list = api.list(&ListParams::default().labels(&format!("podlife.io/pod-name={pod}"))).await?;
    list.items
        .into_iter()
        .filter(|r| r.spec.pod_name == pod)
        .max_by_key(|r| r.metadata.creation_timestamp.clone().map(|t| t.0))
        .ok_or_else(|| Error::NoReport { pod: pod.to_string(), namespace: namespace.to_string() })
}

/// Prints a report in `format`.
///
/// # Errors
/// The report is missing, or output fails.
pub async fn report(client: &Client, namespace: &str, pod: &str, format: Format, width: usize, out: &mut impl Write) -> Result<()> {
    let report = find_report(client, namespace, pod).await?;
    let history = report.status.unwrap_or_else(|| crate::lifecycle::PodHistory::new(pod, &report.spec.pod_uid));
    let timeline = Timeline::from_history(&history, jiff::Timestamp::now());
    match format {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&history)?)?,
        Format::Svg => write!(out, "{}", timeline.render_svg())?,
        Format::Html => write!(out, "{}", report_html(&history, &timeline))?,
        Format::Human => {
            write!(out, "{}", timeline.render_text(width))?;
            let s = &history.summary;
            writeln!(
                out,
                "\nphase {} · ready {} · restarts {} · back-off {} · last termination {}",
                s.phase.map_or("?", |p| p.as_str()),
                s.ready,
                s.restarts,
                s.backoff,
                s.last_termination_reason.as_deref().unwrap_or("-")
            )?;
            if history.truncated.total() > 0 {
                writeln!(out, "(older entries dropped to stay bounded: {:?})", history.truncated)?;
            }
        }
    }
    Ok(())
}

/// A pod's report as one HTML page: the chart, then every restart with measured vs expected.
fn report_html(history: &crate::lifecycle::PodHistory, timeline: &Timeline) -> String {
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
            let exp: crate::crd::ProbeExperiment =
                serde_yaml::from_value(value).map_err(|e| format!("{} document {}: not a ProbeExperiment: {e}", path.display(), i + 1))?;
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
        Ok(())
    }
}

fn passed(e: &crate::crd::ProbeExperiment) -> bool {
    e.status.as_ref().is_some_and(|s| s.phase == crate::crd::experiment::ExperimentPhase::Passed)
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

/// The timeline of an experiment's pod (the first pod of a Job) from its PodLifecycle report,
/// with what podlife-target recorded; `None` if there is no report.
pub async fn experiment_timeline(client: &Client, e: &crate::crd::ProbeExperiment) -> Option<Timeline> {
    use kube::ResourceExt;
    let s = e.status.clone().unwrap_or_default();
    let ns = e.namespace().unwrap_or_default();
    let report = match (&s.pod_name, &s.report) {
        (Some(pod), _) => find_report(client, &ns, pod).await.ok()?,
        (None, Some(name)) => Api::<PodLifecycle>::namespaced(client.clone(), &ns).get(name).await.ok()?,
        (None, None) => return None,
    };
    let end = s.finished_at.unwrap_or_else(jiff::Timestamp::now);
    Some(Timeline::from_history(&report.status?, end).with_target_marks(&s.target_marks))
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

/// An HTML page with a section per experiment: phase, a verdict table (expected next to
/// observed), actions and the SVG timeline. Pure, so it is tested without a cluster.
#[must_use]
pub fn html(experiments: &[crate::crd::ProbeExperiment], svgs: &[Option<String>]) -> String {
    use kube::ResourceExt;
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

fn json_of(e: &crate::crd::ProbeExperiment) -> serde_json::Value {
    use kube::ResourceExt;
    serde_json::json!({"name": e.name_any(), "status": e.status})
}

/// JUnit XML, as CI systems read it.
#[must_use]
pub fn junit(experiments: &[crate::crd::ProbeExperiment]) -> String {
    use kube::ResourceExt;
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"podlife\">\n");
    for e in experiments {
        let s = e.status.clone().unwrap_or_default();
        let failures = s.verdicts.iter().filter(|v| !v.passed).count();
        let errors = usize::from(s.phase == crate::crd::experiment::ExperimentPhase::Error);
        let seconds = match (s.started_at, s.finished_at) {
            (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
            _ => 0.0,
        };
        xml.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{seconds:.1}\">\n",
            escape(&e.name_any()),
            s.verdicts.len().max(1)
        ));
        if let (crate::crd::experiment::ExperimentPhase::Error, Some(reason)) = (s.phase, &s.reason) {
            xml.push_str(&format!(
                "    <testcase name=\"run\" classname=\"{}\"><error message=\"{}\"/></testcase>\n",
                escape(&e.name_any()),
                escape(reason)
            ));
        }
        for v in &s.verdicts {
            xml.push_str(&format!("    <testcase name=\"{}\" classname=\"{}\">", escape(&v.name), escape(&e.name_any())));
            if !v.passed {
                xml.push_str(&format!("<failure message=\"expected {}, observed {}\"/>", escape(&v.expected), escape(&v.observed)));
            }
            xml.push_str("</testcase>\n");
        }
        xml.push_str("  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    xml
}

/// The built-in conformance suite: the kubelet's own upstream probe and lifecycle checks as
/// ProbeExperiments (manifests/conformance/), embedded so the CLI needs no checkout.
pub const CONFORMANCE: &[(&str, &str)] = &[
    ("backoff-curve-and-cap", include_str!("../../manifests/conformance/backoff-curve-and-cap.yaml")),
    ("grace-period-reduced-at-delete", include_str!("../../manifests/conformance/grace-period-reduced-at-delete.yaml")),
    ("graceful-delete-within-grace", include_str!("../../manifests/conformance/graceful-delete-within-grace.yaml")),
    ("hooks-order", include_str!("../../manifests/conformance/hooks-order.yaml")),
    ("job-completions-parallelism", include_str!("../../manifests/conformance/job-completions-parallelism.yaml")),
    ("job-onfailure-retries-in-place", include_str!("../../manifests/conformance/job-onfailure-retries-in-place.yaml")),
    ("liveness-after-startup-restarts", include_str!("../../manifests/conformance/liveness-after-startup-restarts.yaml")),
    ("liveness-disabled-while-terminating", include_str!("../../manifests/conformance/liveness-disabled-while-terminating.yaml")),
    ("liveness-exec-no-restart", include_str!("../../manifests/conformance/liveness-exec-no-restart.yaml")),
    ("liveness-exec-restart", include_str!("../../manifests/conformance/liveness-exec-restart.yaml")),
    ("liveness-exec-slow-past-timeout-restart", include_str!("../../manifests/conformance/liveness-exec-slow-past-timeout-restart.yaml")),
    ("liveness-exec-timeout-restart", include_str!("../../manifests/conformance/liveness-exec-timeout-restart.yaml")),
    ("liveness-grpc-no-restart", include_str!("../../manifests/conformance/liveness-grpc-no-restart.yaml")),
    ("liveness-grpc-restart", include_str!("../../manifests/conformance/liveness-grpc-restart.yaml")),
    ("liveness-http-no-restart", include_str!("../../manifests/conformance/liveness-http-no-restart.yaml")),
    ("liveness-http-restart", include_str!("../../manifests/conformance/liveness-http-restart.yaml")),
    ("liveness-local-redirect-restart", include_str!("../../manifests/conformance/liveness-local-redirect-restart.yaml")),
    ("liveness-nonlocal-redirect-no-restart", include_str!("../../manifests/conformance/liveness-nonlocal-redirect-no-restart.yaml")),
    (
        "liveness-probe-grace-period-overrides-pod",
        include_str!("../../manifests/conformance/liveness-probe-grace-period-overrides-pod.yaml"),
    ),
    ("liveness-restart-count-increases", include_str!("../../manifests/conformance/liveness-restart-count-increases.yaml")),
    ("liveness-tcp-no-restart", include_str!("../../manifests/conformance/liveness-tcp-no-restart.yaml")),
    ("liveness-tcp-restart", include_str!("../../manifests/conformance/liveness-tcp-restart.yaml")),
    ("poststart-failing-restarts", include_str!("../../manifests/conformance/poststart-failing-restarts.yaml")),
    ("prestop-exec-failing-event", include_str!("../../manifests/conformance/prestop-exec-failing-event.yaml")),
    ("prestop-http-500-is-not-a-failure", include_str!("../../manifests/conformance/prestop-http-500-is-not-a-failure.yaml")),
    ("prestop-sleep", include_str!("../../manifests/conformance/prestop-sleep.yaml")),
    ("readiness-exec-failing-never-ready", include_str!("../../manifests/conformance/readiness-exec-failing-never-ready.yaml")),
    ("readiness-exec-timeout-never-ready", include_str!("../../manifests/conformance/readiness-exec-timeout-never-ready.yaml")),
    ("readiness-false-while-terminating", include_str!("../../manifests/conformance/readiness-false-while-terminating.yaml")),
    ("readiness-initial-delay", include_str!("../../manifests/conformance/readiness-initial-delay.yaml")),
    ("restart-always-exit-0-restarts", include_str!("../../manifests/conformance/restart-always-exit-0-restarts.yaml")),
    ("restart-always-exit-1-restarts", include_str!("../../manifests/conformance/restart-always-exit-1-restarts.yaml")),
    ("restart-never-exit-0-succeeded", include_str!("../../manifests/conformance/restart-never-exit-0-succeeded.yaml")),
    ("restart-never-exit-1-failed", include_str!("../../manifests/conformance/restart-never-exit-1-failed.yaml")),
    ("restart-onfailure-exit-0-succeeded", include_str!("../../manifests/conformance/restart-onfailure-exit-0-succeeded.yaml")),
    ("restart-onfailure-exit-1-restarts", include_str!("../../manifests/conformance/restart-onfailure-exit-1-restarts.yaml")),
    ("sidecar-liveness-exec-restart", include_str!("../../manifests/conformance/sidecar-liveness-exec-restart.yaml")),
    ("sidecar-liveness-http-no-restart", include_str!("../../manifests/conformance/sidecar-liveness-http-no-restart.yaml")),
    ("sidecar-liveness-http-restart", include_str!("../../manifests/conformance/sidecar-liveness-http-restart.yaml")),
    ("sidecar-readiness-failing-never-ready", include_str!("../../manifests/conformance/sidecar-readiness-failing-never-ready.yaml")),
    ("sidecar-startup-delays-liveness", include_str!("../../manifests/conformance/sidecar-startup-delays-liveness.yaml")),
    ("sidecar-startup-failing-restarts", include_str!("../../manifests/conformance/sidecar-startup-failing-restarts.yaml")),
    ("startup-delays-liveness", include_str!("../../manifests/conformance/startup-delays-liveness.yaml")),
    ("startup-failing-restarts", include_str!("../../manifests/conformance/startup-failing-restarts.yaml")),
    ("startup-probe-grace-period-overrides-pod", include_str!("../../manifests/conformance/startup-probe-grace-period-overrides-pod.yaml")),
    ("startup-then-ready", include_str!("../../manifests/conformance/startup-then-ready.yaml")),
];

/// Runs the conformance suite: every case in its own new namespace, or all of them in
/// `in_namespace` (one the operator covers). Prints the verdicts (or JSON/JUnit), writes the
/// files in `options`, deletes the namespaces it created, and returns (passed, failed, outcome).
///
/// # Errors
/// A preflight check fails, no operator accepts the cases, a namespace or experiment cannot be
/// created, or a wait runs out.
pub async fn suite(
    client: &Client,
    filter: Option<&str>,
    in_namespace: Option<&str>,
    format: RunFormat,
    options: &RunOptions,
    out: &mut impl Write,
) -> Result<(usize, usize, Outcome)> {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{DeleteParams, PostParams};
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut cases = Vec::new();
    for (name, yaml) in CONFORMANCE.iter().filter(|(n, _)| filter.is_none_or(|f| n.contains(f))) {
        let exp: crate::crd::ProbeExperiment =
            serde_yaml::from_str(yaml).map_err(|e| Error::Io(std::io::Error::other(format!("{name}: {e}"))))?;
        let ns = in_namespace.map_or_else(|| format!("podlife-conformance-{name}"), str::to_string);
        cases.push((ns, exp));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_conformance_file_is_embedded_and_parses() {
        let mut on_disk: Vec<String> = std::fs::read_dir("manifests/conformance")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".yaml").map(str::to_string))
            .collect();
        on_disk.sort();
        let embedded: Vec<String> = CONFORMANCE.iter().map(|(n, _)| (*n).to_string()).collect();
        assert_eq!(embedded, on_disk, "add new cases to CONFORMANCE");
        for (name, yaml) in CONFORMANCE {
            let exp: crate::crd::ProbeExperiment = serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(kube::ResourceExt::name_any(&exp), *name);
            assert!(exp.spec.duration_seconds < exp.spec.timeout_seconds, "{name}: observed within its timeout");
        }
    }

    #[test]
    fn junit_reports_each_expectation_and_escapes() {
        let mut exp: crate::crd::ProbeExperiment = serde_yaml::from_str(CONFORMANCE[0].1).unwrap();
        exp.status = Some(crate::crd::experiment::ExperimentStatus {
            phase: crate::crd::experiment::ExperimentPhase::Failed,
            verdicts: vec![
                crate::crd::experiment::Verdict { name: "a<b".into(), passed: true, expected: "1".into(), observed: "1".into() },
                crate::crd::experiment::Verdict { name: "c".into(), passed: false, expected: "\"x\"".into(), observed: "y & z".into() },
            ],
            ..Default::default()
        });
        let xml = junit(&[exp]);
        assert!(xml.contains(r#"tests="2" failures="1" errors="0""#), "{xml}");
        assert!(xml.contains("a&lt;b") && xml.contains("expected &quot;x&quot;, observed y &amp; z"), "{xml}");
    }

    #[test]
    fn html_shows_each_verdict_next_to_its_observation_and_embeds_the_picture() {
        let mut exp: crate::crd::ProbeExperiment = serde_yaml::from_str(CONFORMANCE[0].1).unwrap();
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
