//! veltrix_codec: Avro and Protobuf in the Confluent wire format (magic 0, big-endian schema
//! id, [message indexes,] payload) decoded straight into Arrow-layout column buffers.

mod avro;
mod columns;
mod error;
mod framing;
mod json;
mod protobuf;
mod text;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use columns::{Column, Kind};
use framing::Format;

/// Pointers to the values' bytes (null for None), for the GIL-free section.
struct Values(Vec<(*const u8, usize)>);
// SAFETY: read-only views of immutable bytes objects that a list owned by the caller keeps
// alive until the section ends.
unsafe impl Send for Values {}

/// A snapshot of `values` (a new list: its items stay alive whatever happens to `values`)
/// and pointers to the bytes of its items.
fn gather<'py>(values: &Bound<'py, PyAny>) -> PyResult<(Bound<'py, PyList>, Values)> {
    let list = match values.cast::<PyList>() {
        Ok(list) => list.get_slice(0, list.len()),
        Err(_) => PyList::new(
            values.py(),
            values.try_iter()?.collect::<PyResult<Vec<_>>>()?,
        )?,
    };
    let mut ptrs = Vec::with_capacity(list.len());
    for i in 0..list.len() {
        // SAFETY: i < len of a list only we hold; the item is borrowed from it
        unsafe {
            let item = ffi::PyList_GetItem(list.as_ptr(), i as ffi::Py_ssize_t);
            if item == ffi::Py_None() {
                ptrs.push((std::ptr::null(), 0));
                continue;
            }
            let mut buf: *mut std::os::raw::c_char = std::ptr::null_mut();
            let mut len: ffi::Py_ssize_t = 0;
            if ffi::PyBytes_AsStringAndSize(item, &mut buf, &mut len) < 0 {
                let _ = PyErr::take(list.py());
                let kind = Bound::from_borrowed_ptr(list.py(), item).get_type();
                return Err(PyTypeError::new_err(format!(
                    "values must be bytes or None, not {}",
                    kind.name().map_or("?".into(), |n| n.to_string())
                )));
            }
            ptrs.push((buf as *const u8, len as usize));
        }
    }
    Ok((list, Values(ptrs)))
}

/// (positions decoded, [(position, error)], (validity, offsets, data) per column)
type Decoded<'py> = (Vec<usize>, Vec<(usize, String)>, Vec<Bound<'py, PyTuple>>);

/// Decodes Avro datums in the Confluent wire format into Arrow column buffers.
#[pyclass(module = "veltrix_codec")]
struct AvroDecoder {
    columns: Vec<Column>,
    format: avro::Avro,
}

#[pymethods]
impl AvroDecoder {
    #[new]
    fn new(columns: Vec<(String, String, bool)>) -> PyResult<Self> {
        Ok(AvroDecoder {
            columns: parse_columns(columns)?,
            format: avro::Avro::default(),
        })
    }

    /// Compiles the writer schema `writer_schema` (Avro JSON) for records of `schema_id`.
    fn add_schema(&mut self, schema_id: u32, writer_schema: &str) -> PyResult<()> {
        let plan = avro::plan::Plan::new(writer_schema, &self.columns)
            .map_err(|e| PyValueError::new_err(format!("schema id {schema_id}: {e}")))?;
        self.format.plans.insert(schema_id, plan);
        Ok(())
    }

    fn has(&self, schema_id: u32) -> bool {
        self.format.plans.contains_key(&schema_id)
    }

    /// -> (positions decoded, [(position, error)], [(validity, offsets, data)] per column)
    fn decode<'py>(
        &mut self,
        py: Python<'py>,
        values: &Bound<'py, PyAny>,
    ) -> PyResult<Decoded<'py>> {
        framed(py, values, &self.format, &mut self.columns)
    }
}

/// Decodes Protobuf values in the Confluent wire format into Arrow column buffers, from
/// plans that veltrix_ray.batch.protobuf makes of the compiled schemas.
#[pyclass(module = "veltrix_codec")]
struct ProtobufDecoder {
    columns: Vec<Column>,
    format: protobuf::Protobuf,
}

#[pymethods]
impl ProtobufDecoder {
    #[new]
    fn new(columns: Vec<(String, String, bool)>) -> PyResult<Self> {
        Ok(ProtobufDecoder {
            columns: parse_columns(columns)?,
            format: protobuf::Protobuf::default(),
        })
    }

    /// The plan of one schema id: its message types, enums, and per message-index path the
    /// message and each column's operation (or the error of every record with that path).
    fn add_schema(
        &mut self,
        schema_id: u32,
        messages: Vec<protobuf::MessagePlan>,
        enums: Vec<protobuf::EnumPlan>,
        targets: Vec<protobuf::TargetPlan>,
    ) -> PyResult<()> {
        let proto = protobuf::Proto::new(messages, enums, targets, self.columns.len())
            .map_err(|e| PyValueError::new_err(format!("schema id {schema_id}: bad plan: {e}")))?;
        self.format.schemas.insert(schema_id, proto);
        Ok(())
    }

    fn has(&self, schema_id: u32) -> bool {
        self.format.schemas.contains_key(&schema_id)
    }

    /// -> (positions decoded, [(position, error)], [(validity, offsets, data)] per column)
    fn decode<'py>(
        &mut self,
        py: Python<'py>,
        values: &Bound<'py, PyAny>,
    ) -> PyResult<Decoded<'py>> {
        framed(py, values, &self.format, &mut self.columns)
    }
}

/// One GIL-free pass of the framing loop over `values` with `format`, then the buffers.
fn framed<'py, F: Format + Sync>(
    py: Python<'py>,
    values: &Bound<'py, PyAny>,
    format: &F,
    columns: &mut [Column],
) -> PyResult<Decoded<'py>> {
    let (items, ptrs) = gather(values)?;
    let cols = &mut *columns;
    let out = py.detach(move || {
        let ptrs = ptrs;
        // SAFETY: `items` keeps every value alive until after this section
        unsafe { framing::run(format, cols, &ptrs.0) }
    });
    drop(items);
    Ok((out.good, out.bad, take_buffers(py, columns)?))
}

/// (validity, offsets, data) of each column as bytes; the columns start again empty.
fn take_buffers<'py>(
    py: Python<'py>,
    columns: &mut [Column],
) -> PyResult<Vec<Bound<'py, PyTuple>>> {
    let bytes = |b: Option<&[u8]>| b.map(|b| PyBytes::new(py, b));
    let mut buffers = Vec::with_capacity(columns.len());
    for c in columns {
        let (validity, offsets, data) = c.buffers();
        buffers.push(PyTuple::new(
            py,
            [
                bytes(validity).into_pyobject(py)?.into_any(),
                bytes(offsets).into_pyobject(py)?.into_any(),
                PyBytes::new(py, data).into_any(),
            ],
        )?);
        c.clear();
    }
    Ok(buffers)
}

fn parse_columns(columns: Vec<(String, String, bool)>) -> PyResult<Vec<Column>> {
    let mut cols = Vec::with_capacity(columns.len());
    for (name, kind, nullable) in columns {
        let k = Kind::parse(&kind).ok_or_else(|| {
            PyValueError::new_err(format!("column `{name}`: unknown type `{kind}`"))
        })?;
        cols.push(Column::new(name, k, nullable));
    }
    Ok(cols)
}

/// Decodes JSON values (one object per record) into Arrow column buffers; records it cannot
/// decode exactly as the Python path would are deferred to it.
#[pyclass(module = "veltrix_codec")]
struct JsonDecoder {
    inner: json::JsonDecoder,
}

/// (positions decoded, positions deferred, positions without a value, buffers per column)
type JsonDecoded<'py> = (Vec<usize>, Vec<usize>, Vec<usize>, Vec<Bound<'py, PyTuple>>);

#[pymethods]
impl JsonDecoder {
    #[new]
    fn new(columns: Vec<(String, String, bool)>, max_record_bytes: usize) -> PyResult<Self> {
        let columns = parse_columns(columns)?;
        if let Some(c) = columns.iter().find(|c| !json::supported(c.kind)) {
            return Err(PyValueError::new_err(format!(
                "column `{}`: type {} is decoded by the Python path",
                c.name,
                c.kind.name()
            )));
        }
        Ok(JsonDecoder {
            inner: json::JsonDecoder::new(columns, max_record_bytes),
        })
    }

    /// -> (positions decoded, positions deferred, positions of None, buffers per column)
    fn decode<'py>(
        &mut self,
        py: Python<'py>,
        values: &Bound<'py, PyAny>,
    ) -> PyResult<JsonDecoded<'py>> {
        let (items, ptrs) = gather(values)?;
        let inner = &mut self.inner;
        let out = py.detach(move || {
            let ptrs = ptrs;
            // SAFETY: `items` keeps every value alive until after this section
            unsafe { inner.run(&ptrs.0) }
        });
        drop(items);
        let buffers = take_buffers(py, &mut self.inner.columns)?;
        Ok((out.good, out.deferred, out.absent, buffers))
    }
}

/// The Confluent schema id of each value: -1 for None or under 5 bytes, -2 for a magic byte
/// other than 0.
#[pyfunction]
fn schema_ids(values: &Bound<'_, PyAny>) -> PyResult<Vec<i64>> {
    let mut ids = Vec::new();
    for item in values.try_iter()? {
        let item = item?;
        if item.is_none() {
            ids.push(-1);
        } else {
            let b = item
                .cast::<PyBytes>()
                .map_err(|_| PyTypeError::new_err("values must be bytes or None"))?;
            ids.push(framing::schema_id(Some(b.as_bytes())));
        }
    }
    Ok(ids)
}

#[pymodule]
fn veltrix_codec(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<AvroDecoder>()?;
    m.add_class::<ProtobufDecoder>()?;
    m.add_class::<JsonDecoder>()?;
    m.add_function(wrap_pyfunction!(schema_ids, m)?)?;
    Ok(())
}
