//! Crash safety of the uplink attach and detach, against real OVS (netdev) and the real kernel
//! in network namespaces: the run is stopped at every step, before and after the step's
//! journal entry (as a kill would), then the next start converges; the node must end in
//! exactly the desired state (addresses and routes once, on the right device; NIC in the
//! bridge on its fixed ofport; MTU 1500 from the plan despite a 1450 port on the bridge) and
//! reach addresses in another namespace across the underlay, directly and through routes.

mod uplink_support;

use anyhow::{ensure, Context, Result};
use uplink_support::Env;
use weft_agent::uplink::{AttachStep, CrashPoint, DetachStep, Journaled, StepPlan, Target};

fn attach_points() -> Vec<CrashPoint> {
    AttachStep::ALL
        .iter()
        .flat_map(|s| [Journaled::Before, Journaled::After].map(|j| CrashPoint::Attach(*s, j)))
        .collect()
}

fn detach_points() -> Vec<CrashPoint> {
    DetachStep::ALL
        .iter()
        .flat_map(|s| [Journaled::Before, Journaled::After].map(|j| CrashPoint::Detach(*s, j)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_and_detach_reach_their_end_states() -> Result<()> {
    let env = Env::start().await?;
    env.assert_detached().context("before anything")?;
    let first = env.converge(Target::Attached, None).await?;
    ensure!(
        first.plan == StepPlan::FreshAttach && !first.stopped,
        "{first:?}"
    );
    env.assert_attached().context("after attach")?;
    // A second start with the uplink attached re-runs the idempotent steps, changing nothing.
    let again = env.converge(Target::Attached, None).await?;
    ensure!(again.plan == StepPlan::ResumeAttach, "{again:?}");
    env.assert_attached().context("after a second start")?;
    let detach = env.converge(Target::Detached, None).await?;
    ensure!(detach.plan == StepPlan::Detach, "{detach:?}");
    env.assert_detached().context("after detach")?;
    let nothing = env.converge(Target::Detached, None).await?;
    ensure!(
        nothing.plan == StepPlan::Nothing && nothing.ran.is_empty(),
        "{nothing:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_attach_is_finished_at_next_start() -> Result<()> {
    let env = Env::start().await?;
    for point in attach_points() {
        let stopped = env.converge(Target::Attached, Some(point)).await?;
        ensure!(stopped.stopped, "{point:?} never reached: {stopped:?}");
        env.converge(Target::Attached, None).await?;
        env.assert_attached()
            .with_context(|| format!("finishing after a kill at {point:?}"))?;
        env.converge(Target::Detached, None).await?;
        env.assert_detached()
            .with_context(|| format!("detach after recovering from {point:?}"))?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_attach_is_undone_when_no_longer_wanted() -> Result<()> {
    let env = Env::start().await?;
    for point in attach_points() {
        let stopped = env.converge(Target::Attached, Some(point)).await?;
        ensure!(stopped.stopped, "{point:?} never reached: {stopped:?}");
        env.converge(Target::Detached, None).await?;
        env.assert_detached()
            .with_context(|| format!("undoing after a kill at {point:?}"))?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_detach_is_finished_or_reverted() -> Result<()> {
    let env = Env::start().await?;
    for point in detach_points() {
        env.converge(Target::Attached, None).await?;
        let stopped = env.converge(Target::Detached, Some(point)).await?;
        ensure!(stopped.stopped, "{point:?} never reached: {stopped:?}");
        env.converge(Target::Detached, None).await?;
        env.assert_detached()
            .with_context(|| format!("finishing a detach killed at {point:?}"))?;

        env.converge(Target::Attached, None).await?;
        env.converge(Target::Detached, Some(point)).await?;
        env.converge(Target::Attached, None).await?;
        env.assert_attached()
            .with_context(|| format!("re-attaching after a detach killed at {point:?}"))?;
        env.converge(Target::Detached, None).await?;
    }
    Ok(())
}
