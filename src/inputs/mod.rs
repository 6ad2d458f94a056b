//! What a run reads: the TorchScript model, checkpoint files in the forms people save them, and
//! the dataset (CIFAR-10 in either version, or .npy arrays), each checked as it is read.

pub mod checkpoint;
pub mod data;
pub mod model;
