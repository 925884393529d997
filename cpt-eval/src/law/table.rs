//! A sweep's results table (`sweep.csv`): one row per point, columns by name.

use super::LawError;
use std::path::{Path, PathBuf};

/// A CSV table with a header row, kept as text until a column is asked for.
#[derive(Debug, Clone)]
pub struct ResultsTable {
    path: PathBuf,
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl ResultsTable {
    /// Read a CSV file with a header row.
    pub fn read(path: &Path) -> Result<Self, LawError> {
        let text = std::fs::read_to_string(path).map_err(|source| LawError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parse CSV text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, LawError> {
        let csv_error = |e: csv::Error| LawError::Csv {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let headers = reader
            .headers()
            .map_err(csv_error)?
            .iter()
            .map(str::to_string)
            .collect();
        let rows = reader
            .records()
            .map(|r| r.map(|r| r.iter().map(str::to_string).collect()))
            .collect::<Result<Vec<Vec<String>>, _>>()
            .map_err(csv_error)?;
        Ok(Self {
            path: path.to_path_buf(),
            headers,
            rows,
        })
    }

    /// Rows below the header.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// A column's cells as text.
    pub fn text_column(&self, name: &str) -> Result<Vec<String>, LawError> {
        let index = self.index(name)?;
        Ok(self.rows.iter().map(|row| row[index].clone()).collect())
    }

    /// A column's cells as numbers; a cell that is not one is an error naming its row.
    pub fn number_column(&self, name: &str) -> Result<Vec<f64>, LawError> {
        let index = self.index(name)?;
        self.rows
            .iter()
            .enumerate()
            .map(|(i, row)| {
                row[index]
                    .trim()
                    .parse::<f64>()
                    .map_err(|_| LawError::NotANumber {
                        path: self.path.clone(),
                        row: i + 1,
                        column: name.to_string(),
                        value: row[index].clone(),
                    })
            })
            .collect()
    }

    fn index(&self, name: &str) -> Result<usize, LawError> {
        self.headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| LawError::MissingColumn {
                path: self.path.clone(),
                column: name.to_string(),
                available: self.headers.join(", "),
            })
    }
}
