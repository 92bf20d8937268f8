//! 50 pod veths created concurrently on a multi-threaded runtime: all succeed, each lands in its
//! own pod namespace, and no runtime thread (nor the process) ever changes namespace.

mod iface_support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use iface_support::{process_netns_ino, thread_netns_ino, TestNetns};
use weft_agent::iface::{DeleteOutcome, PodRoute, PodVethSpec, VethManager};
use weft_agent::netns::Netns;

const PODS: usize = 50;
const POD_MTU: u32 = 1450;

#[test]
fn fifty_veths_created_concurrently() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let own_netns = process_netns_ino();
    let node = TestNetns::new("scn");
    let pods: Vec<TestNetns> = (0..PODS).map(|_| TestNetns::new("scp")).collect();

    let (durations, worker_inos) = runtime.block_on(async {
        let manager = VethManager::new(Netns::open(node.path()).unwrap())
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for (i, pod) in pods.iter().enumerate() {
            let manager = manager.clone();
            let pod_ns = Netns::open(pod.path()).unwrap();
            let mut spec = PodVethSpec::new(
                &format!("container-{i}"),
                &format!("web-{i}"),
                "eth0",
                POD_MTU,
            );
            let third = i + 1;
            spec.addresses = vec![
                format!("10.98.{third}.2/24").parse().unwrap(),
                format!("fd00:98:{third:x}::2/64").parse().unwrap(),
            ];
            spec.routes = vec![
                PodRoute::default_via(format!("10.98.{third}.1").parse().unwrap()),
                PodRoute::default_via(format!("fd00:98:{third:x}::1").parse().unwrap()),
            ];
            spec.disable_tx_checksum = true;
            tasks.push(tokio::spawn(async move {
                let start = Instant::now();
                let result = manager.create(&pod_ns, &spec).await;
                // Where did this task run? Must be the process's namespace.
                (spec, result, start.elapsed(), thread_netns_ino())
            }));
        }
        let mut durations = Vec::new();
        let mut inos = HashSet::new();
        let mut specs = Vec::new();
        for task in tasks {
            let (spec, result, elapsed, ino) = task.await.unwrap();
            result.unwrap_or_else(|e| panic!("create for {}: {e}", spec.host_ifname));
            durations.push(elapsed);
            inos.insert(ino);
            specs.push(spec);
        }
        // Probe every worker thread a few times after the churn.
        let probes: Vec<_> = (0..64)
            .map(|_| {
                tokio::spawn(async {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    thread_netns_ino()
                })
            })
            .collect();
        for probe in probes {
            inos.insert(probe.await.unwrap());
        }

        for (spec, pod) in specs.iter().zip(&pods) {
            let pod_ns = Netns::open(pod.path()).unwrap();
            let found = manager.check(&pod_ns, spec).await.unwrap();
            assert!(found.is_empty(), "{}: {found:?}", spec.host_ifname);
        }
        let deletes: Vec<_> = specs
            .iter()
            .map(|spec| {
                let manager = manager.clone();
                let (name, id) = (spec.host_ifname.clone(), spec.container_id.clone());
                tokio::spawn(async move { manager.delete(&name, &id).await })
            })
            .collect();
        for delete in deletes {
            assert_eq!(delete.await.unwrap().unwrap(), DeleteOutcome::Deleted);
        }
        (durations, inos)
    });

    assert_eq!(
        worker_inos,
        HashSet::from([own_netns]),
        "a runtime thread changed netns"
    );
    assert_eq!(process_netns_ino(), own_netns);
    assert_eq!(thread_netns_ino(), own_netns);
    assert!(node.link_names().is_empty(), "{:?}", node.link_names());
    for pod in &pods {
        assert!(
            pod.link_names().is_empty(),
            "{}: {:?}",
            pod.name(),
            pod.link_names()
        );
    }

    let mut sorted = durations.clone();
    sorted.sort();
    eprintln!(
        "{PODS} concurrent veth creates: median {:?}, min {:?}, max {:?}",
        sorted[PODS / 2],
        sorted[0],
        sorted[PODS - 1]
    );
}

#[test]
fn one_veth_create_time() {
    // Sequential creates: the latency of one ADD's kernel side without contention.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let node = TestNetns::new("sqn");
    let pods: Vec<TestNetns> = (0..10).map(|_| TestNetns::new("sqp")).collect();
    let mut durations = runtime.block_on(async {
        let manager = VethManager::new(Netns::open(node.path()).unwrap())
            .await
            .unwrap();
        let mut durations = Vec::new();
        for (i, pod) in pods.iter().enumerate() {
            let pod_ns = Netns::open(pod.path()).unwrap();
            let mut spec = PodVethSpec::new(&format!("c{i}"), &format!("p{i}"), "eth0", POD_MTU);
            spec.addresses = vec![format!("10.97.{i}.2/24").parse().unwrap()];
            spec.routes = vec![PodRoute::default_via(
                format!("10.97.{i}.1").parse().unwrap(),
            )];
            spec.disable_tx_checksum = true;
            let start = Instant::now();
            manager.create(&pod_ns, &spec).await.unwrap();
            durations.push(start.elapsed());
        }
        durations
    });
    durations.sort();
    eprintln!(
        "sequential veth create: median {:?}, max {:?}",
        durations[durations.len() / 2],
        durations[durations.len() - 1]
    );
    assert_eq!(node.link_names().len(), pods.len());
}
