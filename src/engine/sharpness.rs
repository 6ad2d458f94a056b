//! A network at θ as the objective of the sharpness measures (`space::sharpness`): the exact
//! dataset-mean loss and error at θ + δ, and the gradient with respect to δ by one backward per
//! batch, over the parameters a measure perturbs (those the directions move: biasbn, tensors with
//! more than one dimension; keep, all). The model is moved in place and put back bit for bit.
//! With BatchNorm re-estimation the statistics are re-estimated at every perturbed point before
//! its loss (and gradient, taken in eval mode with those statistics) is computed. Values and
//! gradients run the model's products forward (`Model::forward_products`): eval mode with every
//! BatchNorm that follows a layer folded into it as a function of the parameters, which gives the
//! same function with one memory-bound pass less per layer each way (5-20% per pass on the CPU).

use std::path::Path;

use tch::{Device, Kind, Tensor};

use crate::engine::batchnorm::Recompute;
use crate::engine::evaluate::{batch_loss, denominator, Evaluator, Forward, Products};
use crate::error::{Error, Result, Role, Setting};
use crate::inputs::data::{Dataset, IGNORE_INDEX};
use crate::inputs::model::Model;
use crate::options::{LossKind, Measure, PNorm, SharpnessScale};
use crate::space::directions;
use crate::space::sharpness::{self as sharp, AscentOptions, Objective};
use crate::store::record::{
    SharpnessDetails, SharpnessItem, SharpnessPlan, SharpnessPoint, SharpnessResult, SharpnessSpec,
};

/// The network as an objective.
pub struct Net<'a> {
    model: &'a Model,
    /// The forward every value and gradient runs: eval mode, BatchNorms folded into the layers
    /// before them as functions of the parameters (`Model::forward_products`).
    products: Products<'a>,
    data: &'a Dataset,
    ev: Evaluator,
    /// Indices into `model.params` of the perturbed parameters, and their values at θ.
    set: Vec<usize>,
    base: Vec<Tensor>,
    bn: Option<(&'a Recompute, &'a Dataset)>,
    /// m-sharpness: samples per part (the first ⌊N/m⌋·m samples in file order).
    part: Option<usize>,
    /// Forward passes over a sample set (values) and backward ones (gradients) so far.
    pub values: usize,
    pub gradients: usize,
    /// Wall seconds of the gradient passes, summed.
    pub gradient_seconds: f64,
    /// `--rel-error`: the evaluator that stops a draw's pass once its loss is known to E, and the
    /// seed of the draws' sample orders (each draw index its own order).
    sampled: Option<(Evaluator, u64)>,
    /// Samples the draws used, against their exact passes.
    pub samples_used: u64,
    pub samples_exact: u64,
}

impl<'a> Net<'a> {
    /// The objective of `model` (as it stands: θ) on `data`, perturbing the parameters `set`.
    pub fn new(
        model: &'a Model,
        data: &'a Dataset,
        ev: &Evaluator,
        set: Vec<usize>,
        bn: Option<(&'a Recompute, &'a Dataset)>,
        part: Option<usize>,
    ) -> Result<Net<'a>> {
        if set.is_empty() {
            return Err(Error::file(Role::Model, &model.path, "has no parameter in the set a sharpness measure moves"));
        }
        if let Some(m) = part {
            if m == 0 || m > data.n {
                return Err(Error::setting(
                    Setting::MSharpness,
                    m,
                    format!("must be between 1 and the {} samples of {}", data.n, data.path.display()),
                ));
            }
        }
        let base = set.iter().map(|&i| model.params[i].1.detach().copy()).collect();
        let mut ev = ev.clone();
        ev.loss_cap = None;
        // Every value but a random draw's is exact.
        let sampled = (ev.rel_error > 0.0).then(|| ev.clone());
        ev.rel_error = 0.0;
        Ok(Net {
            model,
            products: Products(model),
            data,
            ev,
            set,
            base,
            bn,
            part,
            values: 0,
            gradients: 0,
            gradient_seconds: 0.0,
            sampled: sampled.map(|e| (e, 0)),
            samples_used: 0,
            samples_exact: 0,
        })
    }

    /// Seed the draws' sample orders (with `--rel-error`).
    pub fn seed_draws(&mut self, seed: u64) {
        if let Some((_, s)) = self.sampled.as_mut() {
            *s = seed;
        }
    }

    /// The scale vector c over the set, flat (module docs of `space::sharpness`).
    pub fn scale(&self, scale: SharpnessScale, floor: f64) -> Tensor {
        let parts: Vec<Tensor> = self
            .base
            .iter()
            .map(|t| {
                let t = t.to_kind(Kind::Float);
                let c = match scale {
                    SharpnessScale::None => t.ones_like(),
                    SharpnessScale::Adaptive => t.abs() + floor,
                    SharpnessScale::Filter if t.dim() > 1 => {
                        let rows = t.size()[0];
                        let flat = t.reshape([rows, -1]);
                        let per = (flat.size()[1] as f64).sqrt();
                        (flat.norm_scalaropt_dim(2, [1], true) / per).expand_as(&flat).reshape(t.size().as_slice())
                    }
                    SharpnessScale::Filter => t.ones_like() * (t.norm().double_value(&[]) / (t.numel() as f64).sqrt()),
                };
                c.flatten(0, -1)
            })
            .collect();
        Tensor::cat(&parts, 0)
    }

    /// The names and shapes of the perturbed parameters, in order.
    pub fn names(&self) -> Vec<(String, Vec<i64>)> {
        self.set.iter().map(|&i| (self.model.params[i].0.clone(), self.model.params[i].1.size())).collect()
    }

    /// The parameters at θ + δ (and the BatchNorm statistics re-estimated there, in recompute).
    fn place(&self, delta: &Tensor) -> Result<()> {
        {
            let _g = tch::no_grad_guard();
            let mut offset = 0;
            for (&i, b) in self.set.iter().zip(&self.base) {
                let p = &self.model.params[i].1;
                let n = b.numel() as i64;
                let d = delta.narrow(0, offset, n).view(b.size().as_slice()).to_kind(b.kind());
                let mut p = p.shallow_clone();
                p.copy_(&(b + d));
                offset += n;
            }
        }
        if let Some((bn, data)) = self.bn {
            bn.run(self.model, &self.ev, data)?;
        }
        Ok(())
    }

    /// Put the parameters back at θ, bit for bit.
    pub fn restore(&self) {
        let _g = tch::no_grad_guard();
        for (&i, b) in self.set.iter().zip(&self.base) {
            let mut p = self.model.params[i].1.shallow_clone();
            p.copy_(b);
        }
    }

    /// The samples of a part: (first, count).
    fn range(&self, part: Option<usize>) -> (usize, usize) {
        match (part, self.part) {
            (Some(b), Some(m)) => (b * m, m),
            _ => (0, self.data.n),
        }
    }

    /// What the summed loss of the samples [start, start + len) is divided by.
    fn count(&self, start: usize, len: usize) -> f64 {
        if (start, len) == (0, self.data.n) {
            return denominator(self.ev.loss, self.data, self.ev.outputs_per_sample);
        }
        match self.ev.loss {
            LossKind::Ce => self.data.targets(start, len).ne(IGNORE_INDEX).sum(Kind::Int64).int64_value(&[]) as f64,
            LossKind::Mse => (len as i64 * self.ev.outputs_per_sample) as f64,
        }
    }
}

impl Objective for Net<'_> {
    fn dim(&self) -> i64 {
        self.base.iter().map(|t| t.numel() as i64).sum()
    }

    fn device(&self) -> Device {
        self.model.device
    }

    fn parts(&self) -> usize {
        self.part.map_or(1, |m| self.data.n / m)
    }

    fn value(&mut self, delta: &Tensor, part: Option<usize>) -> Result<(f64, f64)> {
        self.place(delta)?;
        self.values += 1;
        let (start, len) = self.range(part);
        if len == self.data.n {
            let v = self.ev.evaluate(&self.products, self.data)?;
            return Ok((v.loss, 1.0 - v.acc));
        }
        let _g = tch::no_grad_guard();
        let dev = self.data.x.device();
        let (mut loss, mut correct) = (Tensor::zeros([], (Kind::Double, dev)), Tensor::zeros([], (Kind::Int64, dev)));
        let mut s = start;
        while s < start + len {
            let n = self.ev.batch_size.min(start + len - s);
            let out = self.products.forward(&self.data.inputs_as(s, n, self.ev.input_kind))?.to_kind(Kind::Float);
            let y = self.data.targets(s, n);
            loss += batch_loss(self.ev.loss, &out, &y, Kind::Double).to_kind(Kind::Double);
            if self.ev.loss == LossKind::Ce {
                let logits = out.reshape([-1, out.size()[out.dim() - 1]]);
                correct += logits.argmax(1, false).eq_tensor(&y.reshape([-1])).sum(Kind::Int64);
            }
            s += n;
        }
        let count = self.count(start, len);
        let err = match self.ev.loss {
            LossKind::Ce => 1.0 - correct.int64_value(&[]) as f64 / count,
            LossKind::Mse => f64::NAN,
        };
        Ok((loss.double_value(&[]) / count, err))
    }

    /// With `--rel-error`, draw `draw` visits the samples in its own seeded order and stops once its
    /// loss is known to E: the draws' sampling errors are independent, so the spread of the draws
    /// (and the standard error reported) includes them.
    fn draw_value(&mut self, delta: &Tensor, draw: u64) -> Result<(f64, f64)> {
        let Some((ev, seed)) = &self.sampled else { return self.value(delta, None) };
        let order = crate::space::sample::permutation(self.data.n, sharp::mix(*seed, draw));
        let order = Tensor::from_slice(&order).to_device(self.data.x.device());
        let ev = ev.clone();
        self.place(delta)?;
        self.values += 1;
        let v = ev.evaluate_in_order(&self.products, self.data, &order)?;
        self.samples_used += v.samples as u64;
        self.samples_exact += self.data.n as u64;
        Ok((v.loss, 1.0 - v.acc))
    }

    fn gradient(&mut self, delta: &Tensor, part: Option<usize>) -> Result<(f64, Tensor)> {
        let clock = std::time::Instant::now();
        self.place(delta)?;
        self.gradients += 1;
        let (start, len) = self.range(part);
        let params: Vec<Tensor> = self.set.iter().map(|&i| self.model.params[i].1.shallow_clone()).collect();
        let torch = |e: tch::TchError| self.model.forward_error(&e);
        tch::with_grad(|| -> Result<(f64, Tensor)> {
            let mut sums: Vec<Tensor> = self.base.iter().map(|b| b.zeros_like().to_kind(Kind::Float)).collect();
            let mut total = 0.0;
            let mut s = start;
            while s < start + len {
                let n = self.ev.batch_size.min(start + len - s);
                let out = self.products.forward(&self.data.inputs_as(s, n, self.ev.input_kind))?.to_kind(Kind::Float);
                let l = batch_loss(self.ev.loss, &out, &self.data.targets(s, n), Kind::Float);
                if !l.requires_grad() {
                    return Err(Error::file(
                        Role::Model,
                        &self.model.path,
                        "its loss does not depend differentiably on the parameters (no autograd graph through its forward)",
                    ));
                }
                total += l.double_value(&[]);
                let grads = Tensor::f_run_backward(&[&l], &params, false, false).map_err(torch)?;
                for (sum, g) in sums.iter_mut().zip(grads) {
                    *sum += g.to_kind(Kind::Float);
                }
                s += n;
            }
            let count = self.count(start, len);
            let flat = Tensor::cat(&sums.iter().map(|t| t.flatten(0, -1)).collect::<Vec<_>>(), 0) / count;
            Ok((total / count, flat))
        })
        .inspect(|_| self.gradient_seconds += clock.elapsed().as_secs_f64())
    }
}

/// The seed of a measurement: the run's, the model's index, the measure and the radius, so that a
/// measurement draws the same numbers whichever task and shard computes it.
pub fn item_seed(seed: u64, item: &SharpnessItem) -> u64 {
    let measure = match item.measure {
        Measure::Average => 1,
        Measure::Worst => 2,
        Measure::Pacbayes => 3,
    };
    sharp::mix(sharp::mix(sharp::mix(seed, item.model as u64), measure), item.radius.map_or(0, f64::to_bits))
}

/// One measurement's settings, and how each measure becomes its record.
struct Measurement<'a> {
    item: SharpnessItem,
    spec: &'a SharpnessSpec,
    c: &'a Tensor,
    seed: u64,
    rho: f64,
    /// 1 + L(θ): Keskar's relative form is 100 · value / this.
    keskar: f64,
}

impl Measurement<'_> {
    fn relative(&self, v: f64) -> Option<f64> {
        Some(100.0 * v / self.keskar)
    }

    fn average(&self, net: &mut Net) -> Result<SharpnessResult> {
        let a = sharp::average(net, self.c, self.rho, self.spec.samples, self.seed)?;
        Ok(SharpnessResult {
            measure: self.item.measure,
            radius: self.item.radius,
            value: a.value,
            stderr: Some(a.stderr),
            relative: self.relative(a.value),
            samples: a.samples,
            steps: 0,
            details: SharpnessDetails::Average,
            sampled: None,
        })
    }

    fn ascent(&self) -> AscentOptions {
        let spec = self.spec;
        AscentOptions { norm: spec.norm, steps: spec.steps, restarts: spec.restarts, seed: self.seed }
    }

    fn m_sharpness(&self, net: &mut Net) -> Result<SharpnessResult> {
        let (a, parts) = sharp::m_sharpness(net, self.c, self.rho, self.ascent())?;
        let spec = self.spec;
        Ok(SharpnessResult {
            measure: self.item.measure,
            radius: self.item.radius,
            value: a.value,
            stderr: Some(a.stderr),
            relative: self.relative(a.value),
            samples: a.samples,
            steps: spec.steps,
            details: SharpnessDetails::Worst {
                trace: vec![],
                gradients: parts.len() * spec.steps * spec.restarts.max(1),
                parts: Some(parts),
                delta: None,
                constraint: None,
            },
            sampled: None,
        })
    }

    /// The worst case over the whole set; its δ saved into `run_dir` as a direction file.
    fn worst(&self, net: &mut Net, model: &Model, plan: &SharpnessPlan, run_dir: &Path) -> Result<SharpnessResult> {
        let w = sharp::worst(net, self.c, self.rho, self.ascent(), None)?;
        let file = crate::store::sharpness::delta_file(plan, self.item.model, self.rho);
        let constraint = ball_norm(&w.delta, self.c, self.spec.norm);
        let direction = directions::from_flat(&w.delta, &net.names(), &model.params);
        let path = run_dir.join(&file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, "cannot create", e))?;
        }
        directions::save(&path, &direction, None)?;
        Ok(SharpnessResult {
            measure: self.item.measure,
            radius: self.item.radius,
            value: w.value,
            stderr: None,
            relative: self.relative(w.value),
            samples: 1,
            steps: self.spec.steps,
            details: SharpnessDetails::Worst {
                trace: w.trace,
                gradients: w.gradients,
                parts: None,
                delta: Some(file),
                constraint: Some(constraint),
            },
            sampled: None,
        })
    }

    fn pacbayes(&self, net: &mut Net) -> Result<SharpnessResult> {
        let spec = self.spec;
        let p = sharp::pacbayes(net, self.c, spec.quantity, spec.threshold, spec.samples, self.seed)?;
        Ok(SharpnessResult {
            measure: self.item.measure,
            radius: None,
            value: p.sigma,
            stderr: p.stderr.is_finite().then_some(p.stderr),
            relative: None,
            samples: p.samples,
            steps: 0,
            details: SharpnessDetails::Pacbayes {
                sigma: p.sigma,
                flatness: p.measure,
                levels: p.levels,
                bracketed: p.bracketed,
                base: p.base,
            },
            sampled: None,
        })
    }
}

/// A measurement's record and what its gradient passes cost.
pub struct Measured {
    pub point: SharpnessPoint,
    /// Gradient passes over the data (ascent steps) and their wall seconds.
    pub gradients: usize,
    pub gradient_seconds: f64,
}

/// Measurement `k` of `plan` on `model` as it stands (θ: a model of the plan): its record, and
/// for a worst case over the whole set the δ found, saved into `run_dir`. The model is put back.
pub fn measure(
    model: &Model,
    data: &Dataset,
    ev: &Evaluator,
    recompute: Option<(&Recompute, &Dataset)>,
    plan: &SharpnessPlan,
    k: usize,
    run_dir: &Path,
) -> Result<Measured> {
    let item = plan.items[k];
    let spec = &plan.spec;
    // The loss at θ is exact, --rel-error or not.
    let exact = Evaluator { rel_error: 0.0, ..ev.clone() };
    let at = exact.evaluate(model, data)?;
    if !at.loss.is_finite() {
        return Err(Error::file(
            Role::Checkpoint,
            &plan.models[item.model],
            format!("the loss at the model is {}: no sharpness to measure", at.loss),
        ));
    }
    let set = crate::engine::hessian::parameter_set(model, spec.parameters);
    let part = if item.measure == Measure::Worst { spec.m_sharpness } else { None };
    let mut net = Net::new(model, data, ev, set, recompute, part)?;
    let c = net.scale(spec.scale, spec.floor);
    let seed = item_seed(spec.seed, &item);
    net.seed_draws(sharp::mix(ev.sample_seed, seed));
    let rho = item.radius.unwrap_or(f64::NAN);
    let m = Measurement { item, spec, c: &c, seed, rho, keskar: 1.0 + at.loss };
    let outcome = match item.measure {
        Measure::Average => m.average(&mut net),
        Measure::Worst if spec.m_sharpness.is_some() => m.m_sharpness(&mut net),
        Measure::Worst => m.worst(&mut net, model, plan, run_dir),
        Measure::Pacbayes => m.pacbayes(&mut net),
    };
    net.restore();
    let mut result = outcome?;
    if net.samples_exact > 0 {
        result.sampled =
            Some(crate::store::record::SampledUse { samples_used: net.samples_used, samples_exact: net.samples_exact });
    }
    Ok(Measured {
        point: SharpnessPoint { item, loss: at.loss, acc: at.acc.is_finite().then_some(at.acc), result },
        gradients: net.gradients,
        gradient_seconds: net.gradient_seconds,
    })
}

/// ‖δ ⊘ c‖_p over the entries where c is not 0 (δ is 0 elsewhere).
fn ball_norm(delta: &Tensor, c: &Tensor, norm: PNorm) -> f64 {
    let nz = c.ne(0.0);
    let u = delta.masked_select(&nz) / c.masked_select(&nz);
    match norm {
        PNorm::L2 => u.norm().double_value(&[]),
        PNorm::Linf => u.abs().max().double_value(&[]),
    }
}
