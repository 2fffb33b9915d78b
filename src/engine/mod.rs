//! The Docker Engine, through bollard. This module knows how to talk to the engine (with a
//! timeout on every call) and nothing about thresholds or the runbook's policy; `spec.rs`
//! builds the container the runbook asks for as a pure value, `stats.rs` computes memory
//! and CPU the way `docker stats` does.

pub mod auth;
pub mod context;
pub mod endpoint;
pub mod kubernetes;
pub mod logs;
pub mod spec;
pub mod stats;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use bollard::auth::DockerCredentials;
use bollard::models::{ContainerCreateBody, ContainerInspectResponse, ExecConfig, ImageInspect};
use bollard::models::{ContainerUpdateBody, RestartPolicy, RestartPolicyNameEnum};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    KillContainerOptionsBuilder, LogsOptionsBuilder, PushImageOptionsBuilder,
    RemoveContainerOptionsBuilder, RenameContainerOptionsBuilder, StatsOptionsBuilder,
    TagImageOptionsBuilder,
};
use bollard::Docker;

use self::endpoint::Endpoint;
use futures_util::StreamExt;

/// Short calls (inspect, start, rename) must answer within this.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Builds and pushes stream for as long as they make progress; the client gives up after this.
const STREAM_TIMEOUT: Duration = Duration::from_secs(1800);

#[derive(Clone)]
pub struct Engine {
    docker: Docker,
    /// Reached through a local socket: its containers' processes and cgroup files are ours
    /// to read. A remote engine's pids mean nothing here.
    local: bool,
}

/// How to get an engine, printed whenever none answers.
pub const START_HINT: &str = "start one with `sudo bash scripts/setup.sh` (installs docker.io and starts dockerd), or point DOCKER_HOST at a running engine";

async fn timed<T>(
    what: &str,
    fut: impl std::future::Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<T> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(r) => r
            .map_err(|e| anyhow!(docker_message(&e)))
            .with_context(|| what.to_string()),
        Err(_) => Err(anyhow!(
            "{what}: the Docker Engine did not answer within {}s",
            CALL_TIMEOUT.as_secs()
        )),
    }
}

/// The engine's own message, without bollard's wrapping.
pub fn docker_message(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            message,
            status_code,
        } => format!("{message} (HTTP {status_code})"),
        bollard::errors::Error::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

/// The error and its sources in one line: a TLS failure sits several sources down.
fn docker_message_chain(e: &bollard::errors::Error) -> String {
    let mut text = docker_message(e);
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text += &format!(": {s_text}");
        }
        source = s.source();
    }
    text
}

/// What a TLS failure means, in the operator's words, ahead of rustls' own.
fn tls_words(e: &str) -> String {
    let l = e.to_ascii_lowercase();
    let why = if l.contains("unknownissuer")
        || l.contains("unknown issuer")
        || l.contains("badsignature")
    {
        "the engine's certificate is not signed by the CA in ca.pem (wrong CA?)"
    } else if l.contains("certificateexpired")
        || l.contains("certificate expired")
        || l.contains("expired")
    {
        if l.contains("alert") {
            "the engine refused our client certificate as expired (cert.pem)"
        } else {
            "the engine's certificate has expired"
        }
    } else if l.contains("certificaterequired")
        || l.contains("certificate required")
        || l.contains("handshakefailure")
    {
        "the engine requires a client certificate it accepts (cert.pem/key.pem)"
    } else if l.contains("unknownca")
        || l.contains("unknown ca")
        || l.contains("badcertificate")
        || l.contains("bad certificate")
    {
        "the engine does not accept our client certificate (not signed by its CA)"
    } else if l.contains("notvalidforname") || l.contains("not valid for name") {
        "the engine's certificate does not name this host"
    } else {
        return e.to_string();
    };
    format!("TLS: {why} ({e})")
}

/// The registry digest (`sha256:...`) an image carries once pushed or pulled, if any.
pub fn repo_digest(image: &ImageInspect) -> Option<String> {
    image
        .repo_digests
        .as_ref()?
        .first()?
        .split('@')
        .nth(1)
        .map(str::to_string)
}

pub fn is_not_found(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.to_string().contains("(HTTP 404)"))
}

impl Engine {
    /// Connects to the engine the docker CLI would use (`endpoint`: --host, --context,
    /// DOCKER_HOST with TLS, the current context, the local socket) and negotiates the API
    /// version, so older engines (20.10 speaks 1.41) work.
    pub async fn connect() -> Result<Engine> {
        let endpoint = endpoint::current()?;
        Engine::connect_to(&endpoint).await
    }

    pub async fn connect_to(ep: &Endpoint) -> Result<Engine> {
        let host = &ep.host;
        // A local socket that does not answer is an engine to start; a remote one, a place to look.
        let hint = match (host.starts_with("unix://"), ep.source.as_str()) {
            (true, "default") => START_HINT.to_string(),
            (true, source) => format!("{START_HINT} (the engine came from {source})"),
            (false, source) => format!("the engine came from {source}"),
        };
        let fail = |e: String| anyhow!("no Docker Engine answers at {host}: {e}; {hint}");
        let secs = STREAM_TIMEOUT.as_secs();
        let version = bollard::API_DEFAULT_VERSION;
        let docker = match &ep.tls {
            Some(t) => {
                ep.check_tls_files()?;
                Docker::connect_with_ssl(host, &t.key, &t.cert, &t.ca, secs, version)
            }
            None if host.starts_with("tcp://") => Docker::connect_with_http(host, secs, version),
            None => Docker::connect_with_unix(host, secs, version),
        }
        .map_err(|e| fail(e.to_string()))?
        .with_timeout(STREAM_TIMEOUT);
        // Negotiating the API version is the one round trip that proves the engine answers.
        match tokio::time::timeout(Duration::from_secs(10), docker.negotiate_version()).await {
            Ok(Ok(docker)) => Ok(Engine {
                docker,
                local: host.starts_with("unix://"),
            }),
            Ok(Err(e)) => Err(fail(tls_words(&docker_message_chain(&e)))),
            Err(_) => Err(fail("no answer within 10s".into())),
        }
    }

    pub fn is_local(&self) -> bool {
        self.local
    }

    pub async fn server_version(&self) -> Result<String> {
        let v = timed("reading the engine version", self.docker.version()).await?;
        Ok(format!(
            "{} (API {})",
            v.version.unwrap_or_default(),
            v.api_version.unwrap_or_default()
        ))
    }

    /// Builds `context_tar` and tags it `tag`; returns the image id.
    pub async fn build(
        &self,
        context_tar: Vec<u8>,
        dockerfile: &str,
        tag: &str,
        build_args: &HashMap<String, String>,
        progress: &dyn Fn(&str),
    ) -> Result<String> {
        let options = BuildImageOptionsBuilder::default()
            .dockerfile(dockerfile)
            .t(tag)
            .rm(true)
            .forcerm(true)
            .buildargs(build_args)
            .build();
        let mut stream =
            self.docker
                .build_image(options, None, Some(bollard::body_full(context_tar.into())));
        let mut log_tail: Vec<String> = Vec::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(line) = info.stream.as_deref().or(info.status.as_deref()) {
                        progress(line);
                        log_tail.push(line.trim_end().to_string());
                        if log_tail.len() > 20 {
                            log_tail.remove(0);
                        }
                    }
                }
                Err(e) => {
                    let tail = log_tail.join("\n");
                    return Err(anyhow!(
                        "docker build failed: {}\n{tail}",
                        docker_message(&e)
                    ));
                }
            }
        }
        let image = self
            .inspect_image(tag)
            .await
            .context("the build finished but its image cannot be found")?;
        image
            .id
            .ok_or_else(|| anyhow!("the engine reported no id for {tag}"))
    }

    pub async fn inspect_image(&self, reference: &str) -> Result<ImageInspect> {
        timed(
            &format!("inspecting image {reference}"),
            self.docker.inspect_image(reference),
        )
        .await
    }

    pub async fn tag(&self, source: &str, repo: &str, tag: &str) -> Result<()> {
        let options = TagImageOptionsBuilder::default()
            .repo(repo)
            .tag(tag)
            .build();
        timed(
            &format!("tagging {source} as {repo}:{tag}"),
            self.docker.tag_image(source, Some(options)),
        )
        .await
    }

    /// Pushes `repo:tag`; returns the manifest digest the registry acknowledged.
    pub async fn push(
        &self,
        repo: &str,
        tag: &str,
        credentials: Option<DockerCredentials>,
        progress: &dyn Fn(&str),
    ) -> Result<String> {
        let options = PushImageOptionsBuilder::default().tag(tag).build();
        let mut stream = self.docker.push_image(repo, Some(options), credentials);
        let mut digest = None;
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| {
                anyhow!(
                    "the registry refused the push of {repo}:{tag}: {}",
                    docker_message(&e)
                )
            })?;
            if let Some(status) = &info.status {
                // The engine's last status line: "<tag>: digest: sha256:... size: 528"
                if let Some(rest) = status.split("digest: ").nth(1) {
                    digest = rest.split_whitespace().next().map(str::to_string);
                }
                let detail = info
                    .progress_detail
                    .as_ref()
                    .and_then(|p| Some(format!(" {}/{}", p.current?, p.total?)))
                    .unwrap_or_default();
                progress(&format!("{status}{detail}"));
            }
        }
        digest
            .ok_or_else(|| anyhow!("push of {repo}:{tag} ended without a digest from the registry"))
    }

    pub async fn inspect_container(&self, name: &str) -> Result<ContainerInspectResponse> {
        timed(
            &format!("inspecting container {name}"),
            self.docker.inspect_container(name, None),
        )
        .await
    }

    /// The container, or None when no container has that name.
    pub async fn find_container(&self, name: &str) -> Result<Option<ContainerInspectResponse>> {
        match self.inspect_container(name).await {
            Ok(c) => Ok(Some(c)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn create_container(&self, name: &str, body: ContainerCreateBody) -> Result<String> {
        let options = CreateContainerOptionsBuilder::default().name(name).build();
        let r = timed(
            &format!("creating container {name}"),
            self.docker.create_container(Some(options), body),
        )
        .await?;
        Ok(r.id)
    }

    pub async fn start_container(&self, name: &str) -> Result<()> {
        timed(
            &format!("starting container {name}"),
            self.docker.start_container(name, None),
        )
        .await
    }

    pub async fn remove_container(&self, name: &str) -> Result<()> {
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        match timed(
            &format!("removing container {name}"),
            self.docker.remove_container(name, Some(options)),
        )
        .await
        {
            Err(e) if is_not_found(&e) => Ok(()),
            other => other,
        }
    }

    pub async fn rename_container(&self, name: &str, new_name: &str) -> Result<()> {
        let options = RenameContainerOptionsBuilder::default()
            .name(new_name)
            .build();
        timed(
            &format!("renaming container {name} to {new_name}"),
            self.docker.rename_container(name, options),
        )
        .await
    }

    /// Runs `cmd` in the container; returns (exit code, stdout+stderr). The output is capped.
    pub async fn exec(&self, name: &str, cmd: &[String]) -> Result<(i64, String)> {
        let config = ExecConfig {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            cmd: Some(cmd.to_vec()),
            ..Default::default()
        };
        let exec = timed(
            &format!("exec in {name}"),
            self.docker.create_exec(name, config),
        )
        .await?;
        let started = timed("starting exec", self.docker.start_exec(&exec.id, None)).await?;
        let mut out = String::new();
        if let bollard::exec::StartExecResults::Attached { mut output, .. } = started {
            let read = async {
                while let Some(Ok(chunk)) = output.next().await {
                    if out.len() < 64 * 1024 {
                        out.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
                    }
                }
            };
            tokio::time::timeout(CALL_TIMEOUT, read)
                .await
                .map_err(|_| anyhow!("exec in {name} did not finish"))?;
        }
        let inspect = timed("inspecting exec", self.docker.inspect_exec(&exec.id)).await?;
        Ok((inspect.exit_code.unwrap_or(-1), out))
    }

    /// One stats reading, at once (one-shot: no previous CPU value, which `docker stats
    /// --no-stream` waits a second or two for; callers diff two readings instead).
    pub async fn stats(&self, name: &str) -> Result<bollard::models::ContainerStatsResponse> {
        let options = StatsOptionsBuilder::default()
            .stream(false)
            .one_shot(true)
            .build();
        let mut stream = self.docker.stats(name, Some(options));
        match tokio::time::timeout(CALL_TIMEOUT, stream.next()).await {
            Ok(Some(r)) => r
                .map_err(|e| anyhow!(docker_message(&e)))
                .with_context(|| format!("reading stats of {name}")),
            Ok(None) => Err(anyhow!("the engine returned no stats for {name}")),
            Err(_) => Err(anyhow!(
                "stats of {name} did not arrive within {}s",
                CALL_TIMEOUT.as_secs()
            )),
        }
    }

    /// Pulls `reference` (e.g. from the local registry) when the engine does not have it.
    pub async fn ensure_image(
        &self,
        reference: &str,
        progress: &dyn Fn(&str),
    ) -> Result<ImageInspect> {
        match self.inspect_image(reference).await {
            Ok(i) => return Ok(i),
            Err(e) if !is_not_found(&e) => return Err(e),
            Err(_) => {}
        }
        progress(&format!("pulling {reference}"));
        let options = CreateImageOptionsBuilder::default()
            .from_image(reference)
            .build();
        let mut stream = self.docker.create_image(Some(options), None, None);
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| {
                anyhow!(
                    "image {reference} is not present and cannot be pulled: {}",
                    docker_message(&e)
                )
            })?;
            if let Some(s) = info.status {
                progress(&s);
            }
        }
        self.inspect_image(reference).await
    }

    /// Stops a container with a grace period finer than Docker's whole seconds: its restart
    /// policy is set to "no" first (so the engine does not bring it back), then SIGTERM, then
    /// SIGKILL once `grace` has passed. Returns whether SIGKILL was needed.
    pub async fn stop_within(&self, name: &str, grace: Duration) -> Result<bool> {
        self.set_restart_policy(name, "no").await?;
        let kill = |sig: &str| {
            let options = KillContainerOptionsBuilder::default().signal(sig).build();
            self.docker.kill_container(name, Some(options))
        };
        if let Err(e) = timed(&format!("sending SIGTERM to {name}"), kill("SIGTERM")).await {
            // 409: not running, which is what we want.
            if e.chain().any(|c| c.to_string().contains("(HTTP 409)")) {
                return Ok(false);
            }
            return Err(e);
        }
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            if !self.is_running(name).await? {
                return Ok(false);
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match timed(&format!("sending SIGKILL to {name}"), kill("SIGKILL")).await {
            Err(e) if !e.chain().any(|c| c.to_string().contains("(HTTP 409)")) => return Err(e),
            _ => {}
        }
        for _ in 0..250 {
            if !self.is_running(name).await? {
                return Ok(true);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(anyhow!(
            "container {name} is still running 5s after SIGKILL"
        ))
    }

    pub async fn is_running(&self, name: &str) -> Result<bool> {
        Ok(self
            .inspect_container(name)
            .await?
            .state
            .and_then(|s| s.running)
            .unwrap_or(false))
    }

    pub async fn set_restart_policy(&self, name: &str, policy: &str) -> Result<()> {
        let name_enum = match policy {
            "always" => RestartPolicyNameEnum::ALWAYS,
            "unless-stopped" => RestartPolicyNameEnum::UNLESS_STOPPED,
            "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
            _ => RestartPolicyNameEnum::NO,
        };
        let body = ContainerUpdateBody {
            restart_policy: Some(RestartPolicy {
                name: Some(name_enum),
                maximum_retry_count: None,
            }),
            ..Default::default()
        };
        timed(
            &format!("setting restart policy of {name}"),
            self.docker.update_container(name, body),
        )
        .await
    }

    /// Reads a container's log lines (stdout and stderr) since a Unix second, counting
    /// those newer than `after_ns` and those `matches`, within `limits` (bytes and time):
    /// a stream that does not end is cut, and `LogScan::cut` says the counts are lower
    /// bounds. `tail` asks the engine for at most that many lines from the end.
    pub async fn scan_logs(
        &self,
        name: &str,
        since_unix: i64,
        after_ns: i128,
        tail: Option<usize>,
        limits: logs::LogLimits,
        matches: &dyn Fn(&str) -> bool,
    ) -> Result<logs::LogScan> {
        let mut options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .timestamps(true)
            .since(since_unix.clamp(0, i32::MAX as i64) as i32);
        if let Some(n) = tail {
            options = options.tail(&n.to_string());
        }
        let mut stream = self.docker.logs(name, Some(options.build()));
        let mut counter = logs::LogCounter::new(limits, after_ns, matches);
        let deadline = tokio::time::Instant::now() + limits.within;
        let cut = loop {
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(Some(Ok(chunk))) => {
                    if !counter.feed(&chunk.into_bytes()) {
                        break None;
                    }
                }
                Ok(Some(Err(e))) => {
                    return Err(anyhow!(docker_message(&e)))
                        .with_context(|| format!("reading the logs of {name}"))
                }
                Ok(None) => break None,
                Err(_) => {
                    break Some(format!(
                        "stopped after {}s of reading logs",
                        limits.within.as_secs_f64()
                    ))
                }
            }
        };
        Ok(counter.finish(cut))
    }

    /// `CreatedBy` of every history entry (the Dockerfile lines, as the engine recorded them).
    pub async fn image_history(&self, reference: &str) -> Result<Vec<String>> {
        let h = timed(
            &format!("reading the history of {reference}"),
            self.docker.image_history(reference),
        )
        .await?;
        Ok(h.into_iter().map(|i| i.created_by).collect())
    }

    /// The image as `docker save` writes it, held in memory up to `limit` bytes.
    pub async fn export_image(&self, reference: &str, limit: usize) -> Result<Vec<u8>> {
        let mut stream = self.docker.export_image(reference);
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| anyhow!("exporting {reference}: {}", docker_message(&e)))?;
            if out.len() + chunk.len() > limit {
                return Err(anyhow!(
                    "the export of {reference} is larger than {} MB; refusing to read it",
                    limit >> 20
                ));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}
