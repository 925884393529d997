//! cpt-models
