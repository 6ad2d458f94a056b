//! The curvature of the dataset-mean loss as an operator: v ↦ Cv for C the Hessian (double
//! backward), the generalized Gauss-Newton matrix Jᵀ H_out J or the empirical Fisher
//! (1/N) Σ g_i g_iᵀ, through the TorchScript module, summed over the batches on the device and
//! divided by N — one host sync per product. C is taken with respect to a chosen set of parameters
//! (those the directions move), the model in eval mode (BatchNorm on its running statistics).

use tch::{Device, Kind, Tensor};

use crate::engine::session::Setup;
use crate::error::{Error, Result, Role};
use crate::inputs::data::Dataset;
use crate::inputs::model::Model;
use crate::options::{EigenMethod, Ignore, LossKind, Operator, PerLayer};
use crate::space::params::{self, NameFilter};
use crate::space::spectrum::{self, Extremes, LanczosOptions, Partition, Trace, TraceMethod, TraceOptions};

/// The layout of a run that takes gradients (sharpness ascent, curve training) or curvature
/// products: channels_last, except for a model with a 1×1 convolution of fewer than 16 input
/// channels on the CPU, which the session keeps NCHW: libtorch 2.11's oneDNN computes that
/// convolution's weight gradient in channels_last past its workspace when it is strided (it spins
/// forever on 2 threads, crashes on 1 and returns wrong values on other CPUs: oneDNN issue #6035;
/// seen on the width-4 ResNet-8 of the tests, in PyTorch as in losscape). 16 is the input-channel
/// block of its AVX-512 kernels (8 on AVX2). Measured on ResNet-20, 2 CPU cores: an ascent step
/// 1.15-1.19x faster than NCHW, a curve-training epoch 1.33-1.41x, a GGN product 1.14x, a Hessian
/// product 1.06x.
pub fn gradient_layout(setup: &mut Setup, dev: Device) {
    setup.gradients_on_cpu = !dev.is_cuda();
}

/// The parameters H is taken over: with biasbn those with more than one dimension, with keep all.
pub fn parameter_set(model: &Model, ignore: Ignore) -> Vec<usize> {
    (0..model.params.len()).filter(|&i| ignore == Ignore::Keep || model.params[i].1.dim() > 1).collect()
}

/// The part of `set` (indices into `model.params`) whose names the filter keeps.
pub fn select(model: &Model, set: Vec<usize>, filter: &NameFilter) -> Result<Vec<usize>> {
    if filter.is_empty() {
        return Ok(set);
    }
    let names: Vec<&str> = set.iter().map(|&i| model.params[i].0.as_str()).collect();
    Ok(filter.select(&names)?.into_iter().map(|k| set[k]).collect())
}

/// v ↦ Cv for the loss of `model` on `data` (C the operator chosen), over the parameters `set`
/// (indices into `model.params`). Vectors are flat float32 tensors on the model's device, the
/// parameters concatenated in order.
pub struct Hessian<'a> {
    model: &'a Model,
    data: &'a Dataset,
    set: Vec<usize>,
    loss: LossKind,
    operator: Operator,
    /// Samples per pass; halved on out-of-memory.
    pub batch_size: usize,
    /// Output entries per sample (MSE's divisor).
    outputs_per_sample: i64,
    /// Products computed so far.
    pub products: usize,
    /// Passes over the data so far (a block of products takes one).
    pub passes: usize,
    /// How the GGN's and the empirical Fisher's directional derivatives are taken.
    pub jvp: Jvp,
}

pub use crate::options::Jvp;

impl<'a> Hessian<'a> {
    pub fn new(
        model: &'a Model,
        data: &'a Dataset,
        set: Vec<usize>,
        loss: LossKind,
        operator: Operator,
        outputs_per_sample: i64,
        batch_size: usize,
    ) -> Result<Hessian<'a>> {
        if set.is_empty() {
            return Err(Error::file(Role::Model, &model.path, "has no parameter in the set the Hessian is taken over"));
        }
        if let Some(&i) = set.iter().find(|&&i| !model.params[i].1.requires_grad()) {
            return Err(Error::file(
                Role::Model,
                &model.path,
                format!("parameter {} does not require grad: no Hessian can be taken", model.params[i].0),
            ));
        }
        Ok(Hessian {
            model,
            data,
            set,
            loss,
            operator,
            batch_size,
            outputs_per_sample,
            products: 0,
            passes: 0,
            jvp: Jvp::Forward,
        })
    }

    /// The same operator on the diagonal block of the parameters at positions `members` of the set.
    pub fn restricted(&self, members: &[usize]) -> Result<Hessian<'a>> {
        let set = members.iter().map(|&k| self.set[k]).collect();
        let mut h = Hessian::new(
            self.model,
            self.data,
            set,
            self.loss,
            self.operator,
            self.outputs_per_sample,
            self.batch_size,
        )?;
        h.jvp = self.jvp;
        Ok(h)
    }

    /// The loss H is the Hessian of.
    pub fn loss_kind(&self) -> LossKind {
        self.loss
    }

    /// BatchNorm layers folded in the module the products run (which this makes, if no product has).
    pub fn batchnorms_folded(&self) -> usize {
        self.model.batchnorms_folded().unwrap_or(0)
    }

    /// The operator the products apply.
    pub fn operator(&self) -> Operator {
        self.operator
    }

    /// Number of entries of a vector (parameters in the set).
    pub fn dim(&self) -> i64 {
        self.set.iter().map(|&i| self.model.params[i].1.numel() as i64).sum()
    }

    /// The names and shapes of the parameters in the set, in order.
    pub fn names(&self) -> Vec<(String, Vec<i64>)> {
        self.set.iter().map(|&i| (self.model.params[i].0.clone(), self.model.params[i].1.size())).collect()
    }

    /// A flat vector split into tensors shaped like the parameters of the set.
    pub fn split(&self, v: &Tensor) -> Vec<Tensor> {
        let mut out = Vec::with_capacity(self.set.len());
        let mut offset = 0;
        for &i in &self.set {
            let p = &self.model.params[i].1;
            let n = p.numel() as i64;
            out.push(v.narrow(0, offset, n).view(p.size().as_slice()));
            offset += n;
        }
        out
    }

    fn denominator(&self) -> f64 {
        crate::engine::evaluate::denominator(self.loss, self.data, self.outputs_per_sample)
    }

    /// The loss of one batch, summed over its targets, with the autograd graph (for Hessian
    /// products by double backward, through `Model::forward_hessian_products`).
    fn batch_loss(&self, start: usize, len: usize, hessian: bool) -> Result<Tensor> {
        let x = self.data.inputs(start, len);
        let out = if hessian { self.model.forward_hessian_products(&x)? } else { self.model.forward_products(&x)? };
        let out = out.to_kind(Kind::Float);
        Ok(crate::engine::evaluate::batch_loss(self.loss, &out, &self.data.targets(start, len), Kind::Float))
    }

    fn params(&self) -> Vec<Tensor> {
        self.set.iter().map(|&i| self.model.params[i].1.shallow_clone()).collect()
    }

    /// Hv over the whole dataset, halving the batch on out-of-memory.
    pub fn apply(&mut self, v: &Tensor) -> Result<Tensor> {
        Ok(self.apply_block(std::slice::from_ref(v))?.pop().expect("one product"))
    }

    /// [Hv_1, …, Hv_k] in one pass over the dataset: per batch one forward and the graph every
    /// product starts from (the gradient with its graph; the Jacobian-transpose trick's), then one
    /// more backward or two per vector. Halves the batch on out-of-memory.
    pub fn apply_block(&mut self, vs: &[Tensor]) -> Result<Vec<Tensor>> {
        loop {
            // Products need the autograd graph, whatever the caller's grad mode.
            match tch::with_grad(|| self.apply_with_grad(vs)) {
                Err(e) if e.is_oom() && self.batch_size > 1 => {
                    log::warn!(
                        "out of memory at batch size {} in a Hessian product; retrying with {}",
                        self.batch_size,
                        self.batch_size / 2
                    );
                    self.batch_size /= 2;
                }
                r => return r,
            }
        }
    }

    fn apply_with_grad(&mut self, vs: &[Tensor]) -> Result<Vec<Tensor>> {
        let params = self.params();
        let split: Vec<Vec<Tensor>> = vs.iter().map(|v| self.split(v)).collect();
        let n = self.data.n;
        let zeros =
            || -> Vec<Tensor> { params.iter().map(|p| Tensor::zeros(p.size(), (Kind::Float, p.device()))).collect() };
        let mut sums: Vec<Vec<Tensor>> = vs.iter().map(|_| zeros()).collect();
        let mut start = 0;
        while start < n {
            let len = self.batch_size.min(n - start);
            let cv = match self.operator {
                Operator::Hessian => self.batch_hessian(start, len, &params, &split)?,
                Operator::Ggn => self.batch_ggn(start, len, &params, &split)?,
                Operator::EmpiricalFisher => self.batch_fisher(start, len, &params, &split)?,
            };
            for (sum, c) in sums.iter_mut().zip(cv) {
                for (s, c) in sum.iter_mut().zip(c) {
                    *s += c.detach();
                }
            }
            start += len;
        }
        self.products += vs.len();
        self.passes += 1;
        let d = self.denominator();
        let flat: Vec<Tensor> = sums
            .iter()
            .map(|sum| Tensor::cat(&sum.iter().map(|s| s.flatten(0, -1)).collect::<Vec<_>>(), 0) / d)
            .collect();
        // The one host sync of the pass: a non-finite entry stops the computation here.
        let finite = Tensor::stack(&flat.iter().map(|f| f.isfinite().all()).collect::<Vec<_>>(), 0).all();
        if finite.int64_value(&[]) == 0 {
            return Err(Error::file(
                Role::Model,
                &self.model.path,
                "a Hessian-vector product is not finite (the loss or its gradient overflows here)",
            ));
        }
        Ok(flat)
    }

    fn torch(&self, e: tch::TchError) -> Error {
        self.model.forward_error(&e)
    }

    fn not_differentiable(&self) -> Error {
        Error::file(
            Role::Model,
            &self.model.path,
            "its loss does not depend differentiably on the parameters (no autograd graph through its forward)",
        )
    }

    /// Σ_b ∇(∇ℓ_b · v) for each v: the Hessian's products on one batch, by double backward from
    /// one gradient with its graph.
    fn batch_hessian(
        &self,
        start: usize,
        len: usize,
        params: &[Tensor],
        vs: &[Vec<Tensor>],
    ) -> Result<Vec<Vec<Tensor>>> {
        let loss = self.batch_loss(start, len, true)?;
        if !loss.requires_grad() {
            return Err(self.not_differentiable());
        }
        let grads = Tensor::f_run_backward(&[&loss], params, true, true).map_err(|e| self.torch(e))?;
        self.gradients_of(vs.iter().map(|v| dot(&grads, v)).collect(), params)
    }

    /// The gradient of each scalar of one graph with respect to `params`, keeping the graph until
    /// the last.
    fn gradients_of(&self, scalars: Vec<Tensor>, params: &[Tensor]) -> Result<Vec<Vec<Tensor>>> {
        let last = scalars.len() - 1;
        scalars
            .iter()
            .enumerate()
            .map(|(i, s)| Tensor::f_run_backward(&[s], params, i < last, false).map_err(|e| self.torch(e)))
            .collect()
    }

    /// `of` of the model's outputs on `x` (float32), through the products' module.
    fn value_of(&self, x: &Tensor, of: &dyn Fn(&Tensor) -> Tensor) -> Result<Tensor> {
        Ok(of(&self.model.forward_products(x)?.to_kind(Kind::Float)))
    }

    /// `of` (a function of the model's outputs on `x`, with the graph Jᵀ is taken on) and J·v for
    /// each v, J its Jacobian in the parameters (detached): in forward mode, or by the
    /// double-backward trick where forward mode is unavailable (from then on).
    fn with_directionals(
        &mut self,
        x: &Tensor,
        params: &[Tensor],
        vs: &[Vec<Tensor>],
        of: &dyn Fn(&Tensor) -> Tensor,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        if self.jvp == Jvp::Forward {
            match self.forward_directionals(x, params, vs, of) {
                Ok(Some(r)) => return Ok(r),
                Err(e) if e.is_oom() => return Err(e),
                outcome => {
                    let why = match outcome {
                        Err(e) => e.to_string(),
                        _ => "no tangent reached the outputs".to_string(),
                    };
                    log::info!("forward-mode derivatives unavailable ({why}); using the double-backward trick");
                    self.jvp = Jvp::DoubleBackward;
                }
            }
        }
        let value = self.value_of(x, of)?;
        let jvs = self.directional(&value, params, vs)?;
        Ok((value, jvs))
    }

    /// As `with_directionals`, in forward mode: the first vector's tangents ride along the forward
    /// pass that records the graph; each further vector takes a forward pass without a graph.
    /// None when `of` carries no tangent.
    fn forward_directionals(
        &self,
        x: &Tensor,
        params: &[Tensor],
        vs: &[Vec<Tensor>],
        of: &dyn Fn(&Tensor) -> Tensor,
    ) -> Result<Option<(Tensor, Vec<Tensor>)>> {
        let mut kept = None;
        let mut jvs = Vec::with_capacity(vs.len());
        for (k, v) in vs.iter().enumerate() {
            let level = crate::ffi::DualLevel::enter()?;
            for (p, t) in params.iter().zip(v) {
                level.set_tangent(p, &t.to_kind(p.kind()))?;
            }
            let value = if k == 0 { self.value_of(x, of)? } else { tch::no_grad(|| self.value_of(x, of))? };
            match level.tangent(&value)? {
                Some(t) => jvs.push(t.detach().to_kind(Kind::Float)),
                None => return Ok(None),
            }
            if k == 0 {
                kept = Some(value);
            }
        }
        Ok(kept.map(|v| (v, jvs)))
    }

    /// J·v for each v, J the Jacobian of `of` — a tensor function of the outputs, with the graph —
    /// by the double-backward trick: with a dummy u (zeros) shaped like `of`, Jᵀu = ∇_θ (of · u)
    /// keeps its graph, and ∇_u (Jᵀu · v) = J v. The graph of `of` is kept for the caller.
    fn directional(&self, of: &Tensor, params: &[Tensor], vs: &[Vec<Tensor>]) -> Result<Vec<Tensor>> {
        if !of.requires_grad() {
            return Err(self.not_differentiable());
        }
        let u = Tensor::zeros_like(of).set_requires_grad(true);
        let jtu =
            Tensor::f_run_backward(&[&(of * &u).sum(Kind::Float)], params, true, true).map_err(|e| self.torch(e))?;
        vs.iter()
            .map(|v| {
                let jv = Tensor::f_run_backward(&[&dot(&jtu, v)], &[&u], true, false).map_err(|e| self.torch(e))?;
                Ok(jv.into_iter().next().expect("one input").detach())
            })
            .collect()
    }

    /// Σ_i J_iᵀ H_i J_i v on one batch for each v: J v in forward mode (or by the double-backward
    /// trick), the loss's Hessian in the outputs in closed form, Jᵀ by one backward.
    fn batch_ggn(
        &mut self,
        start: usize,
        len: usize,
        params: &[Tensor],
        vs: &[Vec<Tensor>],
    ) -> Result<Vec<Vec<Tensor>>> {
        let x = self.data.inputs(start, len);
        let y = self.data.targets(start, len);
        let (out, jvs) = self.with_directionals(&x, params, vs, &|o| o.shallow_clone())?;
        let detached = out.detach();
        let scalars = jvs
            .iter()
            .map(|jv| {
                let hjv = crate::engine::evaluate::output_hessian_product(self.loss, &detached, &y, jv);
                (&out * hjv).sum(Kind::Float)
            })
            .collect();
        self.gradients_of(scalars, params)
    }

    /// Σ_i g_i (g_i · v) on one batch for each v: the per-target losses' directional derivatives
    /// g_i · v (forward mode, or the double-backward trick), then one backward of Σ_i (g_i · v) ℓ_i
    /// with the weights held fixed.
    fn batch_fisher(
        &mut self,
        start: usize,
        len: usize,
        params: &[Tensor],
        vs: &[Vec<Tensor>],
    ) -> Result<Vec<Vec<Tensor>>> {
        let x = self.data.inputs(start, len);
        let (loss, y) = (self.loss, self.data.targets(start, len));
        let per_target = move |o: &Tensor| crate::engine::evaluate::target_losses(loss, o, &y);
        let (losses, gvs) = self.with_directionals(&x, params, vs, &per_target)?;
        self.gradients_of(gvs.iter().map(|gv| (&losses * gv).sum(Kind::Float)).collect(), params)
    }

    /// The loss itself (dataset mean), without a graph.
    pub fn loss(&self) -> Result<f64> {
        let _g = tch::no_grad_guard();
        let mut total = 0.0;
        let mut start = 0;
        while start < self.data.n {
            let len = self.batch_size.min(self.data.n - start);
            total += self.batch_loss(start, len, false)?.double_value(&[]);
            start += len;
        }
        Ok(total / self.denominator())
    }
}

/// Σ_k a_k · b_k over tensors, as one scalar.
fn dot(a: &[Tensor], b: &[Tensor]) -> Tensor {
    a.iter().zip(b).map(|(a, b)| (a * b).sum(Kind::Float)).reduce(|x, y| x + y).expect("a non-empty set")
}

/// What to learn about H.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    /// Extreme eigenpairs (None: not asked for), by Lanczos or by power iteration (K = 1, the
    /// largest |λ|).
    pub lanczos: Option<LanczosOptions>,
    pub method: EigenMethod,
    /// Trace: the method, at most this many products, stopping once the standard error is within
    /// the tolerance.
    pub trace: Option<(TraceMethod, usize, f64)>,
    /// Density: (runs, steps per run).
    pub density: Option<(usize, usize)>,
    pub seed: u64,
    /// Independent products (trace probes, density runs) taken in one pass over the data.
    pub vectors_per_pass: usize,
    /// Also each diagonal block (per tensor or per module): its extreme eigenvalues (K = 1, the
    /// ends asked for) and its trace (from the whole set's trace probes).
    pub per_layer: Option<PerLayer>,
}

/// One diagonal block's results.
pub struct Layer {
    pub name: String,
    /// Its tensors, in model order.
    pub tensors: Vec<String>,
    pub n_params: i64,
    pub extremes: Option<Extremes>,
    /// (estimate, standard error) of the block's trace.
    pub trace: Option<(f64, f64)>,
    /// Products of the block's own operator (its eigenvalues).
    pub products: usize,
}

/// What was learnt, and the seconds and products it took.
pub struct Analysis {
    pub extremes: Option<Extremes>,
    pub trace: Option<Trace>,
    /// Stochastic Lanczos quadrature: (nodes, weights) per run.
    pub quadrature: Option<Vec<(Vec<f64>, Vec<f64>)>>,
    pub seconds: f64,
    pub products: usize,
    /// Passes over the data (products taken together count once).
    pub passes: usize,
    /// The diagonal blocks, in model order (with `per_layer`).
    pub layers: Option<Vec<Layer>>,
}

/// The extreme eigenpairs of `h` by the method asked for (None: none asked for).
fn eigenpairs(h: &mut Hessian, o: Option<LanczosOptions>, method: EigenMethod) -> Result<Option<Extremes>> {
    let (dim, dev) = (h.dim(), h.model.device);
    let mut op = |v: &Tensor| h.apply(v);
    Ok(match (o, method) {
        (Some(o), EigenMethod::Lanczos) => Some(spectrum::extremes(&mut op, dim, dev, o)?),
        (Some(o), EigenMethod::Power) => {
            let (pair, steps) = spectrum::power(&mut op, dim, dev, o.tol, o.max_steps, o.seed)?;
            let converged = pair.convergence != spectrum::Convergence::NotConverged;
            Some(Extremes { largest: vec![pair], smallest: Vec::new(), steps, products: steps, converged })
        }
        (None, _) => None,
    })
}

/// The eigenpairs, trace and density `r` asks for, from the products of `h`; with `per_layer`
/// also each diagonal block's eigenvalues (its own products) and trace (the whole set's probes).
pub fn analyse(h: &mut Hessian, r: Request) -> Result<Analysis> {
    let t0 = std::time::Instant::now();
    let (dim, dev) = (h.dim(), h.model.device);
    let block = r.vectors_per_pass.max(1);
    let extremes = eigenpairs(h, r.lanczos, r.method)?;
    if let Some(e) = extremes.as_ref().filter(|e| !e.converged) {
        log::warn!("not every eigenpair passed its test in {} steps (residuals in hessian.json)", e.steps);
    }
    let names = h.names();
    let blocks = r.per_layer.map(|by| params::blocks(&names.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), by));
    let partition = match &blocks {
        Some(bs) => {
            let mut owner = vec![0; names.len()];
            for (b, block) in bs.iter().enumerate() {
                for &m in &block.members {
                    owner[m] = b;
                }
            }
            Partition { sizes: names.iter().map(|(_, s)| s.iter().product::<i64>()).collect(), owner }
        }
        None => Partition::default(),
    };
    let mut op = |vs: &[Tensor]| h.apply_block(vs);
    let trace = match r.trace {
        Some((method, max, tol)) => {
            let o = TraceOptions { method, max, min: 10.min(max), tol, block, seed: r.seed };
            Some(spectrum::trace(&mut op, dim, dev, o, &partition)?)
        }
        None => None,
    };
    let quadrature = match r.density {
        Some((runs, steps)) => Some(spectrum::quadrature(&mut op, dim, dev, r.seed, runs, steps, block)?),
        None => None,
    };
    let (mut products, mut passes) = (h.products, h.passes);
    let layers = match blocks {
        Some(bs) => {
            let mut out = Vec::with_capacity(bs.len());
            let one = r.lanczos.map(|o| LanczosOptions { k: 1, ..o });
            for (b, block) in bs.into_iter().enumerate() {
                let mut hb = h.restricted(&block.members)?;
                let extremes = eigenpairs(&mut hb, one, r.method)?;
                if let Some(e) = extremes.as_ref().filter(|e| !e.converged) {
                    log::warn!("block {}: its eigenvalues did not pass their test in {} steps", block.name, e.steps);
                }
                products += hb.products;
                passes += hb.passes;
                out.push(Layer {
                    tensors: block.members.iter().map(|&m| names[m].0.clone()).collect(),
                    n_params: hb.dim(),
                    name: block.name,
                    extremes,
                    trace: trace.as_ref().map(|t| t.blocks[b]),
                    products: hb.products,
                });
            }
            Some(out)
        }
        None => None,
    };
    let seconds = t0.elapsed().as_secs_f64();
    Ok(Analysis { extremes, trace, quadrature, seconds, products, passes, layers })
}
