//! Why a value could not go into its column; each decoder adds the field and column names.

/// Why a record failed; the decoder adds the field and column names.
#[derive(Debug, PartialEq)]
pub enum DErr {
    Truncated,
    VarintOverflow,
    NegativeLength(i64),
    TooLong { len: u64, left: usize },
    Utf8,
    Nul,
    Null,
    EnumIndex(i64),
    UnionIndex(i64),
    Boolean(u8),
    Depth,
    IntRange(i64),
    TimestampRange(i64),
    NotUuid,
    DecimalTooLong(usize),
    TooManyItems,
    BatchTooLarge,
}
