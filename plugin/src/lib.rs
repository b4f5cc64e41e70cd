pub mod core {}
