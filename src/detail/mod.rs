//! detail
