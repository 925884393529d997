//! cpt-data
