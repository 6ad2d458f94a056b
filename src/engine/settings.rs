//! Process-wide libtorch settings: TF32 for CUDA float32 convolutions and matmuls, cuDNN's
//! algorithm search, the CPU thread pool. They belong to the whole process, so they are set
//! here only, by the sweep, while no worker is evaluating: once for the strict-fp32 phase (the
//! precision check and the fold check of every worker) and once for the run's own precision.

use crate::error::Result;

/// What the process runs with during one phase of a sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessSettings {
    /// TF32 tensor cores for CUDA float32 convolutions and matmuls.
    pub tf32: bool,
    /// cuDNN times its algorithms and keeps the fastest (per process).
    pub cudnn_benchmark: bool,
    /// Intra-op CPU threads (None: libtorch's choice).
    pub threads: Option<usize>,
}

/// Apply `s` to the process. Call it only while no worker thread is evaluating.
pub fn apply(s: ProcessSettings) -> Result<()> {
    crate::ffi::set_tf32(s.tf32)?;
    tch::Cuda::cudnn_set_benchmark(s.cudnn_benchmark);
    if let Some(n) = s.threads {
        tch::set_num_threads(n.max(1) as i32);
    }
    Ok(())
}

/// Whether CUDA float32 convolutions may use TF32 right now.
pub fn tf32_now() -> bool {
    crate::ffi::tf32_conv()
}

/// How the host allocator (glibc's malloc) was set up by [`keep_host_memory`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostMemory {
    /// Blocks up to 32 MiB come from the heap and up to 1 GiB of freed heap is kept.
    Kept,
    /// The user tunes malloc through the environment (`GLIBC_TUNABLES` with a `glibc.malloc`
    /// entry, or a `MALLOC_*_` variable): their settings stand.
    UserSet,
    /// Not a glibc build: nothing to set.
    Unsupported,
}

/// Keep freed tensor memory in the process instead of returning it to the kernel.
///
/// libtorch allocates CPU tensors with `posix_memalign`; glibc serves blocks above its mmap
/// threshold (dynamic, from 128 KiB) with fresh `mmap`s and trims the heap's free top, so every
/// batch of a backward pass faults its activations' pages in again (zeroed by the kernel) and
/// unmaps them: on the 2-core build machine a sixth of a Hessian product's time was page faults.
/// Serving blocks up to 32 MiB (glibc's largest mmap threshold) from the heap and keeping up to
/// 1 GiB of freed heap reuses the pages. Call once, before any tensor is made (it is a process
/// setting: the CLI calls it first thing). Values are unchanged: only where memory comes from.
pub fn keep_host_memory() -> HostMemory {
    let names = std::env::vars_os().filter_map(|(k, _)| k.into_string().ok());
    if malloc_tuned_by_user(std::env::var("GLIBC_TUNABLES").ok().as_deref(), names) {
        return HostMemory::UserSet;
    }
    set_malloc()
}

/// Whether the environment tunes glibc's malloc: a `glibc.malloc.*` tunable or a `MALLOC_…_`
/// variable (`MALLOC_ARENA_MAX`, `MALLOC_TRIM_THRESHOLD_`, …).
fn malloc_tuned_by_user(tunables: Option<&str>, mut names: impl Iterator<Item = String>) -> bool {
    tunables.is_some_and(|t| t.split(':').any(|kv| kv.starts_with("glibc.malloc.")))
        || names.any(|k| k.starts_with("MALLOC_") && k.len() > "MALLOC_".len())
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_malloc() -> HostMemory {
    // SAFETY: mallopt only changes the allocator's parameters; it is called before worker threads
    // exist. A rejected value (returns 0) leaves glibc's default, which is correct, only slower.
    let (mmap, trim) =
        unsafe { (libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20), libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30)) };
    if mmap == 1 && trim == 1 {
        HostMemory::Kept
    } else {
        HostMemory::Unsupported
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_malloc() -> HostMemory {
    HostMemory::Unsupported
}

/// CPU cores of this machine.
pub fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_users_malloc_settings_stand() {
        let none = || std::iter::empty::<String>();
        assert!(!malloc_tuned_by_user(None, none()));
        assert!(!malloc_tuned_by_user(Some("glibc.rtld.nns=2"), none()));
        assert!(malloc_tuned_by_user(Some("glibc.rtld.nns=2:glibc.malloc.arena_max=1"), none()));
        assert!(malloc_tuned_by_user(None, ["PATH".to_string(), "MALLOC_ARENA_MAX".to_string()].into_iter()));
        assert!(!malloc_tuned_by_user(None, ["MALLOC_".to_string(), "XMALLOC_ARENA".to_string()].into_iter()));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_takes_the_host_memory_settings() {
        // The values are within glibc's limits (the mmap threshold's largest is 32 MiB on 64-bit).
        assert_eq!(set_malloc(), HostMemory::Kept);
    }

    #[test]
    fn tf32_follows_the_setting() {
        let before = tf32_now();
        apply(ProcessSettings { tf32: true, cudnn_benchmark: false, threads: None }).unwrap();
        assert!(tf32_now());
        apply(ProcessSettings { tf32: false, cudnn_benchmark: false, threads: None }).unwrap();
        assert!(!tf32_now());
        crate::ffi::set_tf32(before).unwrap();
    }
}
