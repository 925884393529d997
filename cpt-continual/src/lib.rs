//! cpt-continual
