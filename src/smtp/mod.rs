//! The SMTP data plane.

pub mod proto;
