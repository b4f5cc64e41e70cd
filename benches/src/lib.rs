//! Shared by the criterion benches and the load benchmark (`load.py`):
//! generated policy sets of a given size, so micro and load measure the
//! same sets, and the small HTTP servers the load benchmark runs.

pub mod policyset;
pub mod serve;
