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

/// CPU cores of this machine.
pub fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

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
