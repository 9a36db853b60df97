//! tar.gz batches (placeholder: being written).
