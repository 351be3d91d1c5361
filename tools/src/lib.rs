//! statelite host tools.
