//! Thread priorities: the nice value of threads doing work that may wait
//! (scripts, password hashes), so the kernel runs the HTTP, Raft and
//! storage threads first when the cores are full.

/// Gives the calling thread a nice value of `nice` (0: leaves it), so that
/// when it and its siblings saturate the cores the kernel still runs the
/// HTTP, Raft and storage threads (nice 0) first: health, the admin API,
/// heartbeats and other apps' requests keep their latency. Raising one's
/// own nice value needs no privilege; failing is only logged.
pub fn lower_this_thread_priority(nice: i32) {
    if nice == 0 {
        return;
    }
    let thread = rustix::thread::gettid();
    if let Err(error) = rustix::process::setpriority_process(Some(thread), nice) {
        tracing::warn!(%error, nice, "cannot lower a thread's priority");
    }
}

/// Puts the calling thread under `SCHED_IDLE`: it runs only when no other
/// thread of the machine wants the core, and any waking thread preempts it
/// at once (a nice value only shifts the share and waits out a time
/// slice). For work that must never add latency to anything else: password
/// hashes. Needs no privilege; failing is only logged (the thread keeps its
/// nice value).
pub fn idle_this_thread() {
    use thread_priority::unix::{
        NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
        thread_native_id,
    };
    if let Err(error) = set_thread_priority_and_policy(
        thread_native_id(),
        thread_priority::ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
    ) {
        tracing::warn!(?error, "cannot put a thread under SCHED_IDLE");
    }
}
