//! Parameters by name: read every float parameter of any burn module with its dotted path
//! (`layers.0.self_attn.q_proj.weight`), and write them back, checking every name and shape.
//!
//! Module field names are the checkpoint schema; strategies (EWC, averaging, parameter groups)
//! and the optimizer key their state by these paths, so they work for every model.

use crate::error::{CoreError, Result};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData, backend::Backend};
use std::collections::BTreeMap;
use std::path::Path;

/// A float tensor on the host: shape and row-major values.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Row-major `f32` values.
    pub values: Vec<f32>,
}

impl HostTensor {
    /// Copy a device tensor to the host.
    pub fn from_tensor<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Self {
        let data = tensor.into_data().convert::<f32>();
        let shape = data.shape.to_vec();
        let values = data.into_vec::<f32>().expect("converted to f32 above");
        Self { shape, values }
    }

    /// Upload to `device` as a `D`-dimensional tensor. Panics if the rank differs, which callers
    /// check first with [`HostTensor::shape`].
    pub fn to_tensor<B: Backend, const D: usize>(&self, device: &B::Device) -> Tensor<B, D> {
        Tensor::from_data(
            TensorData::new(self.values.clone(), self.shape.clone()),
            device,
        )
    }
}

/// Named parameter values, sorted by path.
pub type NamedTensors = BTreeMap<String, HostTensor>;

/// Tracks the dotted path of the module being visited, for visitors and mappers of other crates
/// that must name parameters the way this module does.
#[derive(Debug, Default)]
pub struct PathStack(Vec<String>);

impl PathStack {
    /// Call from `enter_module`.
    pub fn enter(&mut self, name: &str) {
        self.0.push(name.to_string());
    }
    /// Call from `exit_module`.
    pub fn exit(&mut self) {
        self.0.pop();
    }
    /// The dotted path of the current parameter.
    pub fn path(&self) -> String {
        self.0.join(".")
    }
}

/// Visit every float parameter of `module` with its dotted path.
pub fn visit_named<B: Backend, M: Module<B>>(
    module: &M,
    mut visit: impl FnMut(&str, &Param<Tensor<B, 1>>, &[usize]),
) {
    // A generic visitor cannot name `Tensor<B, D>` for every `D` in a closure, so parameters are
    // flattened to rank 1 views (a reshape shares storage) and their true shape passed beside.
    struct Visitor<'a, F> {
        stack: PathStack,
        visit: &'a mut F,
    }
    impl<B: Backend, F: FnMut(&str, &Param<Tensor<B, 1>>, &[usize])> ModuleVisitor<B>
        for Visitor<'_, F>
    {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.stack.enter(name);
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.stack.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let value = param.val();
            let shape = value.shape().to_vec();
            let flat =
                Param::initialized(param.id, value.reshape([shape.iter().product::<usize>()]));
            (self.visit)(&self.stack.path(), &flat, &shape);
        }
    }
    module.visit(&mut Visitor {
        stack: PathStack::default(),
        visit: &mut visit,
    });
}

/// Copy every float parameter of `module` to the host, keyed by path.
pub fn named_tensors<B: Backend, M: Module<B>>(module: &M) -> NamedTensors {
    let mut out = NamedTensors::new();
    visit_named(module, |path, param, shape| {
        let mut host = HostTensor::from_tensor(param.val());
        host.shape = shape.to_vec();
        out.insert(path.to_string(), host);
    });
    out
}

/// Replace float parameters by path through `map(path, flat_value) -> new flat value`.
/// Parameter ids and `require_grad` flags are kept.
pub fn map_named<B: Backend, M: Module<B>>(
    module: M,
    mut map: impl FnMut(&str, Tensor<B, 1>) -> Tensor<B, 1>,
) -> M {
    struct Mapper<'a, F> {
        stack: PathStack,
        map: &'a mut F,
    }
    impl<B: Backend, F: FnMut(&str, Tensor<B, 1>) -> Tensor<B, 1>> ModuleMapper<B> for Mapper<'_, F> {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.stack.enter(name);
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.stack.exit();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, value, mapper) = param.consume();
            let require_grad = value.is_require_grad();
            let dims: [usize; D] = value.shape().dims();
            // Untracked first (detaching keeps `require_grad`): on a checkpointing autodiff
            // backend a reshape of a tracked parameter is a graph node that backs up its input,
            // which would keep the old values alive until the next backward pass.
            let flat = value
                .set_require_grad(false)
                .reshape([dims.iter().product::<usize>()]);
            let mut new = (self.map)(&self.stack.path(), flat).reshape(dims);
            if require_grad {
                // A fresh leaf: the mapping is a value replacement, not a step to differentiate.
                new = new.detach().require_grad();
            }
            Param::from_mapped_value(id, new, mapper)
        }
    }
    module.map(&mut Mapper {
        stack: PathStack::default(),
        map: &mut map,
    })
}

/// Load `tensors` into `module`: every parameter must be present with its exact shape, and no
/// tensor may be left over. `source` names the file in errors.
pub fn load_named<B: Backend, M: Module<B>>(
    module: M,
    tensors: &NamedTensors,
    source: &Path,
) -> Result<M> {
    let mut expected = BTreeMap::new();
    visit_named(&module, |path, _, shape| {
        expected.insert(path.to_string(), shape.to_vec());
    });
    for (path, shape) in &expected {
        match tensors.get(path) {
            None => return Err(tensor_error(source, format!("missing tensor `{path}`"))),
            Some(t) if &t.shape != shape => {
                return Err(tensor_error(
                    source,
                    format!(
                        "tensor `{path}` has shape {:?}, the model expects {shape:?}",
                        t.shape
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = tensors.keys().find(|k| !expected.contains_key(*k)) {
        return Err(tensor_error(
            source,
            format!("unexpected tensor `{extra}` (not in the model)"),
        ));
    }
    Ok(map_named(module, |path, old| {
        let host = &tensors[path];
        let n = host.values.len();
        Tensor::from_data(TensorData::new(host.values.clone(), [n]), &old.device())
    }))
}

fn tensor_error(path: &Path, message: String) -> CoreError {
    CoreError::Tensors {
        path: path.to_path_buf(),
        message,
    }
}
