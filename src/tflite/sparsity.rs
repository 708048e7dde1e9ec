//! Densification of sparse constant tensors (TFLite `SparsityParameters`, a variant of the
//! TACO format), as TFLite's DENSIFY op and `FormatConverter::SparseToDense` do it.
//!
//! A conceptual dense tensor of rank n, optionally cut into k-dimensional blocks, is stored
//! level by level in `traversal_order` (n + k levels: the n blocked dims, then the k in-block
//! dims). A DENSE level enumerates all its coordinates; a SPARSE_CSR level lists, for each
//! position of the previous level, a segment of stored coordinates. Values are stored in
//! the order the levels are traversed.

use super::schema::{DimensionMetadata, Sparsity};

/// Why a sparse tensor could not be densified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SparsityError {
    #[error("traversal_order has {found} entries, dim_metadata {metadata}, expected rank {rank} + {blocks} block dims")]
    LevelCount {
        found: usize,
        metadata: usize,
        rank: usize,
        blocks: usize,
    },
    #[error(
        "traversal_order {0:?} is not a permutation of the dense dims followed by the block dims"
    )]
    TraversalOrder(Vec<usize>),
    #[error("block_map {0:?} names a dimension outside the tensor")]
    BlockMap(Vec<usize>),
    #[error("block size of dim {dim} is 0 or does not divide its length {len}")]
    BlockSize { dim: usize, len: usize },
    #[error("sparse level {level}: segment table too short or decreasing")]
    Segments { level: usize },
    #[error("sparse level {level}: coordinate {index} is out of range (size {size})")]
    Coordinate {
        level: usize,
        index: usize,
        size: usize,
    },
    #[error("the tensor stores {stored} values but its sparsity metadata addresses {addressed}")]
    ValueCount { stored: usize, addressed: usize },
    #[error("dense level {level} has size {found}, expected {expected}")]
    DenseSize {
        level: usize,
        found: usize,
        expected: usize,
    },
}

/// Expands `values` (stored in traversal order) into a dense row-major tensor of `shape`;
/// positions not stored are zero.
pub fn densify<T: Copy + Default>(
    shape: &[usize],
    sparsity: &Sparsity,
    values: &[T],
) -> Result<Vec<T>, SparsityError> {
    let rank = shape.len();
    let blocks = sparsity.block_map.len();
    let levels = sparsity.traversal_order.len();
    if levels != rank + blocks || sparsity.dim_metadata.len() != levels {
        return Err(SparsityError::LevelCount {
            found: levels,
            metadata: sparsity.dim_metadata.len(),
            rank,
            blocks,
        });
    }
    let order = &sparsity.traversal_order;
    let is_perm = |slice: &[usize], offset: usize| {
        let mut seen = vec![false; slice.len()];
        slice.iter().all(|&d| {
            d >= offset
                && d - offset < slice.len()
                && !std::mem::replace(&mut seen[d - offset], true)
        })
    };
    if !is_perm(&order[..rank], 0) || !is_perm(&order[rank..], rank) {
        return Err(SparsityError::TraversalOrder(order.clone()));
    }
    if sparsity.block_map.iter().any(|&d| d >= rank) {
        return Err(SparsityError::BlockMap(sparsity.block_map.clone()));
    }

    // Block sizes come from the in-block levels' dense sizes; the blocked dims shrink by them.
    let mut block_size = vec![0usize; blocks];
    for (level, &dim) in order.iter().enumerate().skip(rank) {
        block_size[dim - rank] = match sparsity.dim_metadata[level] {
            DimensionMetadata::Dense { size } => size,
            DimensionMetadata::SparseCsr { .. } => 0,
        };
    }
    let mut blocked_shape = shape.to_vec();
    for (b, &dim) in sparsity.block_map.iter().enumerate() {
        if block_size[b] == 0 || !shape[dim].is_multiple_of(block_size[b]) {
            return Err(SparsityError::BlockSize {
                dim,
                len: shape[dim],
            });
        }
        blocked_shape[dim] /= block_size[b];
    }
    // Size of each level's coordinate range, for validation.
    let level_size: Vec<usize> = order
        .iter()
        .map(|&d| {
            if d < rank {
                blocked_shape[d]
            } else {
                block_size[d - rank]
            }
        })
        .collect();
    for (level, meta) in sparsity.dim_metadata.iter().enumerate() {
        if let DimensionMetadata::Dense { size } = meta {
            if *size != level_size[level] {
                return Err(SparsityError::DenseSize {
                    level,
                    found: *size,
                    expected: level_size[level],
                });
            }
        }
    }

    let mut strides = vec![1usize; rank];
    for d in (0..rank.saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    let mut walk = Walk {
        rank,
        order,
        block_map: &sparsity.block_map,
        block_size: &block_size,
        level_size: &level_size,
        metadata: &sparsity.dim_metadata,
        strides: &strides,
        coords: vec![0; levels],
        values,
        next_value: 0,
        dense: vec![T::default(); shape.iter().product()],
    };
    walk.level(0, 0)?;
    if walk.next_value != values.len() {
        return Err(SparsityError::ValueCount {
            stored: values.len(),
            addressed: walk.next_value,
        });
    }
    Ok(walk.dense)
}

struct Walk<'a, T> {
    rank: usize,
    order: &'a [usize],
    block_map: &'a [usize],
    block_size: &'a [usize],
    level_size: &'a [usize],
    metadata: &'a [DimensionMetadata],
    strides: &'a [usize],
    /// Current coordinate of each level.
    coords: Vec<usize>,
    values: &'a [T],
    next_value: usize,
    dense: Vec<T>,
}

impl<T: Copy> Walk<'_, T> {
    /// Visits level `level`; `parent` is the position reached in the previous level (the
    /// index into the CSR segment table of a sparse level).
    fn level(&mut self, level: usize, parent: usize) -> Result<(), SparsityError> {
        if level == self.order.len() {
            return self.store();
        }
        match &self.metadata[level] {
            DimensionMetadata::Dense { size } => {
                for i in 0..*size {
                    self.coords[level] = i;
                    self.level(level + 1, parent * size + i)?;
                }
            }
            DimensionMetadata::SparseCsr { segments, indices } => {
                let (Some(&start), Some(&end)) = (segments.get(parent), segments.get(parent + 1))
                else {
                    return Err(SparsityError::Segments { level });
                };
                if start > end || end > indices.len() {
                    return Err(SparsityError::Segments { level });
                }
                for (position, &index) in indices.iter().enumerate().take(end).skip(start) {
                    if index >= self.level_size[level] {
                        return Err(SparsityError::Coordinate {
                            level,
                            index,
                            size: self.level_size[level],
                        });
                    }
                    self.coords[level] = index;
                    self.level(level + 1, position)?;
                }
            }
        }
        Ok(())
    }

    /// Writes the next stored value at the dense position of the current coordinates.
    fn store(&mut self) -> Result<(), SparsityError> {
        let mut original = vec![0usize; self.rank];
        for (level, &dim) in self.order.iter().enumerate() {
            if dim < self.rank {
                original[dim] = self.coords[level];
            }
        }
        for (level, &dim) in self.order.iter().enumerate().skip(self.rank) {
            let block = dim - self.rank;
            let target = self.block_map[block];
            original[target] = original[target] * self.block_size[block] + self.coords[level];
        }
        let Some(&value) = self.values.get(self.next_value) else {
            return Err(SparsityError::ValueCount {
                stored: self.values.len(),
                addressed: self.next_value + 1,
            });
        };
        let flat: usize = original.iter().zip(self.strides).map(|(i, s)| i * s).sum();
        self.dense[flat] = value;
        self.next_value += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DimensionMetadata::{Dense, SparseCsr};

    fn csr(segments: &[usize], indices: &[usize]) -> DimensionMetadata {
        SparseCsr {
            segments: segments.to_vec(),
            indices: indices.to_vec(),
        }
    }

    /// The 4x4 matrix of TFLite's sparse_tensor.json example:
    ///   [[1 0 0 0]
    ///    [0 0 2 3]
    ///    [0 0 0 0]
    ///    [0 4 0 5]]  row-major, rows dense, columns CSR.
    #[test]
    fn csr_rows() {
        let sparsity = Sparsity {
            traversal_order: vec![0, 1],
            block_map: vec![],
            dim_metadata: vec![Dense { size: 4 }, csr(&[0, 1, 3, 3, 5], &[0, 2, 3, 1, 3])],
        };
        let dense = densify(&[4, 4], &sparsity, &[1, 2, 3, 4, 5]).unwrap();
        assert_eq!(dense, vec![1, 0, 0, 0, 0, 0, 2, 3, 0, 0, 0, 0, 0, 4, 0, 5]);
    }

    /// Same matrix stored column-major: traversal order (d1, d0).
    #[test]
    fn csr_column_major() {
        let sparsity = Sparsity {
            traversal_order: vec![1, 0],
            block_map: vec![],
            // columns 0..4 dense; rows present per column: c0 {0}, c1 {3}, c2 {1}, c3 {1, 3}
            dim_metadata: vec![Dense { size: 4 }, csr(&[0, 1, 2, 3, 5], &[0, 3, 1, 1, 3])],
        };
        let dense = densify(&[4, 4], &sparsity, &[1, 4, 2, 3, 5]).unwrap();
        assert_eq!(dense, vec![1, 0, 0, 0, 0, 0, 2, 3, 0, 0, 0, 0, 0, 4, 0, 5]);
    }

    /// Block-sparse 4x4 with 2x2 blocks: blocks (0,0) and (1,1) stored, each dense row-major
    /// inside. Dense result:
    ///   [[1 2 0 0]
    ///    [3 4 0 0]
    ///    [0 0 5 6]
    ///    [0 0 7 8]]
    #[test]
    fn block_sparse() {
        let sparsity = Sparsity {
            traversal_order: vec![0, 1, 2, 3],
            block_map: vec![0, 1],
            dim_metadata: vec![
                Dense { size: 2 },
                csr(&[0, 1, 2], &[0, 1]),
                Dense { size: 2 },
                Dense { size: 2 },
            ],
        };
        let dense = densify(&[4, 4], &sparsity, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        assert_eq!(dense, vec![1, 2, 0, 0, 3, 4, 0, 0, 0, 0, 5, 6, 0, 0, 7, 8]);
    }

    /// Rank-4 conv weight [2, 1, 1, 3] with the last dim CSR, as in pose_detection.tflite.
    #[test]
    fn conv_weight_last_dim_sparse() {
        let sparsity = Sparsity {
            traversal_order: vec![0, 1, 2, 3],
            block_map: vec![],
            dim_metadata: vec![
                Dense { size: 2 },
                Dense { size: 1 },
                Dense { size: 1 },
                csr(&[0, 2, 3], &[0, 2, 1]),
            ],
        };
        let dense = densify(&[2, 1, 1, 3], &sparsity, &[1.5f32, -2.0, 7.0]).unwrap();
        assert_eq!(dense, vec![1.5, 0.0, -2.0, 0.0, 7.0, 0.0]);
    }

    #[test]
    fn rejects_inconsistent_metadata() {
        let mut sparsity = Sparsity {
            traversal_order: vec![0, 1],
            block_map: vec![],
            dim_metadata: vec![Dense { size: 4 }, csr(&[0, 1, 3, 3, 5], &[0, 2, 3, 1, 3])],
        };
        assert!(matches!(
            densify(&[4, 4], &sparsity, &[1, 2, 3, 4]),
            Err(SparsityError::ValueCount { .. })
        ));
        assert!(matches!(
            densify(&[4, 3], &sparsity, &[1, 2, 3, 4, 5]),
            Err(SparsityError::Coordinate { .. })
        ));
        sparsity.traversal_order = vec![0, 0];
        assert!(matches!(
            densify(&[4, 4], &sparsity, &[1, 2, 3, 4, 5]),
            Err(SparsityError::TraversalOrder(_))
        ));
    }
}
