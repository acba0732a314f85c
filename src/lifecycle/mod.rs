//! The pure lifecycle model.
