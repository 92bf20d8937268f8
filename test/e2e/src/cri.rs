//! A small CRI client (Kubernetes Container Runtime Interface v1, gRPC over a unix socket) that
//! drives a container runtime the way kubelet does for pod networking: RunPodSandbox with the
//! pod's metadata (the runtime turns it into `K8S_POD_NAMESPACE`, `K8S_POD_NAME`,
//! `K8S_POD_UID` and `K8S_POD_INFRA_CONTAINER_ID` in `CNI_ARGS`) and its hostPort mappings (the
//! `portMappings` capability of the chained `portmap`), CreateContainer, StartContainer,
//! ExecSync, StopPodSandbox and RemovePodSandbox. Blocking calls on a private tokio runtime, so
//! the synchronous tests and harness use it directly.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ExecSyncRequest, ImageSpec,
    LinuxPodSandboxConfig, ListPodSandboxRequest, PodSandboxConfig, PodSandboxMetadata,
    PodSandboxStatus, PodSandboxStatusRequest, PortMapping, Protocol, RemovePodSandboxRequest,
    RunPodSandboxRequest, StartContainerRequest, StatusRequest, StopPodSandboxRequest,
    VersionRequest,
};
use tonic::transport::{Channel, Endpoint, Uri};

/// A pod as kubelet describes it to the runtime.
#[derive(Debug, Clone)]
pub struct PodSpec {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Pod UID.
    pub uid: String,
    /// Sandbox attempt (kubelet increments it when it recreates the sandbox).
    pub attempt: u32,
    /// hostPort mappings: (container port, host port), TCP.
    pub host_ports: Vec<(u16, u16)>,
}

impl PodSpec {
    /// A pod `namespace/name` with a UID derived from both and no host ports.
    pub fn new(namespace: &str, name: &str) -> PodSpec {
        PodSpec {
            namespace: namespace.to_string(),
            name: name.to_string(),
            uid: format!("uid-{namespace}-{name}-{}", std::process::id()),
            attempt: 0,
            host_ports: Vec::new(),
        }
    }

    /// The sandbox config kubelet sends.
    pub fn sandbox_config(&self, log_dir: &Path) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: self.name.clone(),
                uid: self.uid.clone(),
                namespace: self.namespace.clone(),
                attempt: self.attempt,
            }),
            hostname: self.name.clone(),
            log_directory: log_dir
                .join(format!("{}_{}_{}", self.namespace, self.name, self.uid))
                .display()
                .to_string(),
            port_mappings: self
                .host_ports
                .iter()
                .map(|&(container_port, host_port)| PortMapping {
                    protocol: Protocol::Tcp as i32,
                    container_port: i32::from(container_port),
                    host_port: i32::from(host_port),
                    host_ip: String::new(),
                })
                .collect(),
            linux: Some(LinuxPodSandboxConfig::default()),
            ..Default::default()
        }
    }
}

/// What ExecSync returned.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    /// Exit code.
    pub exit_code: i32,
    /// Stdout.
    pub stdout: String,
    /// Stderr.
    pub stderr: String,
}

/// A connected CRI client.
pub struct CriClient {
    runtime: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
    /// Where sandbox log directories go.
    log_dir: PathBuf,
}

impl CriClient {
    /// Connects to the runtime's CRI socket; `log_dir` is the root of pod log directories.
    pub fn connect(socket: &Path, log_dir: &Path) -> Result<CriClient> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let path = socket.to_path_buf();
        let channel = runtime
            .block_on(async move {
                Endpoint::try_from("http://[::]:0")?
                    .connect_timeout(Duration::from_secs(5))
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move {
                            Ok::<_, std::io::Error>(TokioIo::new(
                                tokio::net::UnixStream::connect(path).await?,
                            ))
                        }
                    }))
                    .await
            })
            .with_context(|| format!("cannot connect to the CRI socket {}", socket.display()))?;
        Ok(CriClient {
            runtime,
            client: RuntimeServiceClient::new(channel),
            log_dir: log_dir.to_path_buf(),
        })
    }

    /// The runtime's name and version (`containerd 1.6.20~ds1`).
    pub fn version(&mut self) -> Result<String> {
        let reply = self
            .runtime
            .block_on(self.client.version(VersionRequest {
                version: "v1".into(),
            }))
            .map_err(status_error("Version"))?
            .into_inner();
        Ok(format!("{} {}", reply.runtime_name, reply.runtime_version))
    }

    /// Whether the runtime reports the condition `NetworkReady` (its CNI config is loaded).
    pub fn network_ready(&mut self) -> Result<bool> {
        let reply = self
            .runtime
            .block_on(self.client.status(StatusRequest { verbose: false }))
            .map_err(status_error("Status"))?
            .into_inner();
        Ok(reply
            .status
            .unwrap_or_default()
            .conditions
            .iter()
            .any(|c| c.r#type == "NetworkReady" && c.status))
    }

    /// RunPodSandbox: the runtime creates the pod's network namespace and runs the CNI plugins
    /// (ADD); returns the sandbox id.
    pub fn run_pod_sandbox(&mut self, pod: &PodSpec) -> Result<String> {
        let request = RunPodSandboxRequest {
            config: Some(pod.sandbox_config(&self.log_dir)),
            runtime_handler: String::new(),
        };
        let reply = self
            .runtime
            .block_on(self.client.run_pod_sandbox(request))
            .map_err(status_error("RunPodSandbox"))?;
        Ok(reply.into_inner().pod_sandbox_id)
    }

    /// CreateContainer `name` from `image` running `command` in the sandbox; returns its id.
    pub fn create_container(
        &mut self,
        sandbox_id: &str,
        pod: &PodSpec,
        name: &str,
        image: &str,
        command: &[&str],
    ) -> Result<String> {
        let request = CreateContainerRequest {
            pod_sandbox_id: sandbox_id.to_string(),
            config: Some(ContainerConfig {
                // containerd reserves "container_pod_namespace_uid_attempt": kubelet's
                // container attempt grows with the pod's restarts, so a recreated sandbox's
                // container does not reuse the old one's name.
                metadata: Some(ContainerMetadata {
                    name: name.to_string(),
                    attempt: pod.attempt,
                }),
                image: Some(ImageSpec {
                    image: image.to_string(),
                    ..Default::default()
                }),
                command: command.iter().map(|s| s.to_string()).collect(),
                log_path: format!("{name}/{}.log", pod.attempt),
                ..Default::default()
            }),
            sandbox_config: Some(pod.sandbox_config(&self.log_dir)),
        };
        let reply = self
            .runtime
            .block_on(self.client.create_container(request))
            .map_err(status_error("CreateContainer"))?;
        Ok(reply.into_inner().container_id)
    }

    /// StartContainer.
    pub fn start_container(&mut self, container_id: &str) -> Result<()> {
        self.runtime
            .block_on(self.client.start_container(StartContainerRequest {
                container_id: container_id.to_string(),
            }))
            .map_err(status_error("StartContainer"))?;
        Ok(())
    }

    /// CreateContainer + StartContainer; returns the container id.
    pub fn run_container(
        &mut self,
        sandbox_id: &str,
        pod: &PodSpec,
        name: &str,
        image: &str,
        command: &[&str],
    ) -> Result<String> {
        let id = self.create_container(sandbox_id, pod, name, image, command)?;
        self.start_container(&id)?;
        Ok(id)
    }

    /// ExecSync `cmd` in the container (timeout in seconds).
    pub fn exec_sync(
        &mut self,
        container_id: &str,
        cmd: &[&str],
        timeout: i64,
    ) -> Result<ExecOutput> {
        let reply = self
            .runtime
            .block_on(self.client.exec_sync(ExecSyncRequest {
                container_id: container_id.to_string(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout,
            }))
            .map_err(status_error("ExecSync"))?
            .into_inner();
        Ok(ExecOutput {
            exit_code: reply.exit_code,
            stdout: String::from_utf8_lossy(&reply.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&reply.stderr).into_owned(),
        })
    }

    /// ExecSync that must exit 0; returns stdout.
    pub fn exec_ok(&mut self, container_id: &str, cmd: &[&str]) -> Result<String> {
        let out = self.exec_sync(container_id, cmd, 30)?;
        if out.exit_code != 0 {
            return Err(anyhow!(
                "exec {cmd:?} in container {container_id} exited {}: {}{}",
                out.exit_code,
                out.stdout,
                out.stderr
            ));
        }
        Ok(out.stdout)
    }

    /// PodSandboxStatus.
    pub fn sandbox_status(&mut self, sandbox_id: &str) -> Result<PodSandboxStatus> {
        let reply = self
            .runtime
            .block_on(self.client.pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: sandbox_id.to_string(),
                verbose: false,
            }))
            .map_err(status_error("PodSandboxStatus"))?
            .into_inner();
        reply
            .status
            .ok_or_else(|| anyhow!("sandbox {sandbox_id}: status without status"))
    }

    /// The path of the sandbox's network namespace (containerd: `/var/run/netns/cni-...`), from
    /// the verbose status (the runtime spec of the sandbox container).
    pub fn sandbox_netns(&mut self, sandbox_id: &str) -> Result<PathBuf> {
        let reply = self
            .runtime
            .block_on(self.client.pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: sandbox_id.to_string(),
                verbose: true,
            }))
            .map_err(status_error("PodSandboxStatus"))?
            .into_inner();
        let info: serde_json::Value = reply
            .info
            .get("info")
            .map(|text| serde_json::from_str(text))
            .transpose()?
            .unwrap_or_default();
        info["runtimeSpec"]["linux"]["namespaces"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|ns| ns["type"] == "network")
            .and_then(|ns| ns["path"].as_str())
            .map(PathBuf::from)
            .ok_or_else(|| anyhow!("sandbox {sandbox_id}: no network namespace in its status"))
    }

    /// The sandbox's pod IPs as the runtime reports them (from the CNI result).
    pub fn sandbox_ips(&mut self, sandbox_id: &str) -> Result<Vec<std::net::IpAddr>> {
        let status = self.sandbox_status(sandbox_id)?;
        let network = status.network.unwrap_or_default();
        std::iter::once(network.ip)
            .chain(network.additional_ips.into_iter().map(|ip| ip.ip))
            .filter(|ip| !ip.is_empty())
            .map(|ip| {
                ip.parse()
                    .with_context(|| format!("sandbox {sandbox_id}: bad pod IP {ip:?}"))
            })
            .collect()
    }

    /// Ids of every sandbox the runtime knows.
    pub fn list_sandboxes(&mut self) -> Result<Vec<String>> {
        let reply = self
            .runtime
            .block_on(
                self.client
                    .list_pod_sandbox(ListPodSandboxRequest { filter: None }),
            )
            .map_err(status_error("ListPodSandbox"))?
            .into_inner();
        Ok(reply.items.into_iter().map(|s| s.id).collect())
    }

    /// StopPodSandbox: stops its containers and runs the CNI plugins' DEL.
    pub fn stop_pod_sandbox(&mut self, sandbox_id: &str) -> Result<()> {
        self.runtime
            .block_on(self.client.stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: sandbox_id.to_string(),
            }))
            .map_err(status_error("StopPodSandbox"))?;
        Ok(())
    }

    /// RemovePodSandbox (after stop).
    pub fn remove_pod_sandbox(&mut self, sandbox_id: &str) -> Result<()> {
        self.runtime
            .block_on(self.client.remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: sandbox_id.to_string(),
            }))
            .map_err(status_error("RemovePodSandbox"))?;
        Ok(())
    }
}

fn status_error(call: &'static str) -> impl FnOnce(tonic::Status) -> anyhow::Error {
    move |status| anyhow!("CRI {call}: {:?}: {}", status.code(), status.message())
}
