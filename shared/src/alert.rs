//! Failure mail (placeholder: being written).
