//! cpt-eval
