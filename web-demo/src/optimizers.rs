//! The optimizer race: SophiaG, AdaHessian and AdamW train the same small MLP on the same
//! spirals from the same initial parameters, one full-batch step each per step, on the GPU.
//!
//! Losses are copied on the GPU into a per-optimizer history, so a chunk of steps costs one
//! submission and one readback however many steps it holds.

use std::rc::Rc;

use curvgpu::diag::{AdaHessian, AdaHessianConfig, AdamW, AdamWConfig, SophiaG, SophiaGConfig};
use curvgpu::toy::{spirals, Mlp, MlpShape};
use curvgpu::{Error, Gpu, GpuVec, Optimizer as _, Recorder, Result};
use serde::{Deserialize, Serialize};

/// Everything that fixes a race; the page and the native run use [`RaceConfig::default`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RaceConfig {
    /// Seed of the dataset, the initial parameters and every random draw.
    pub seed: u64,
    /// Spiral arms (classes).
    pub classes: usize,
    /// Points per arm.
    pub points_per_class: usize,
    /// Standard deviation of the noise on the points.
    pub noise: f32,
    /// Hidden width of the MLP.
    pub hidden: usize,
    /// Steps each optimizer takes.
    pub steps: usize,
    /// The loss whose first crossing is reported as "steps to target".
    pub target_loss: f32,
    /// SophiaG's learning rate.
    pub sophia_lr: f32,
    /// SophiaG's clipping scale ρ.
    pub sophia_rho: f32,
    /// Steps between SophiaG's Hessian refreshes (k in the paper).
    pub sophia_every: usize,
    /// AdaHessian's learning rate.
    pub adahessian_lr: f32,
    /// AdamW's learning rate.
    pub adamw_lr: f32,
}

/// Learning rates picked by a coarse sweep on this problem (each optimizer's best of 2–4 tries),
/// so the race compares tuned optimizers rather than one tuned and two not.
impl Default for RaceConfig {
    fn default() -> Self {
        RaceConfig {
            seed: 7,
            classes: 3,
            points_per_class: 100,
            noise: 0.05,
            hidden: 32,
            steps: 300,
            target_loss: 0.3,
            sophia_lr: 0.05,
            sophia_rho: 0.05,
            sophia_every: 10,
            adahessian_lr: 0.8,
            adamw_lr: 0.05,
        }
    }
}

/// The longest race a page may ask for (the history buffers grow with it).
pub const MAX_STEPS: usize = 100_000;
/// The most points per spiral arm a page may ask for.
pub const MAX_POINTS_PER_CLASS: usize = 10_000;

impl RaceConfig {
    /// Checks what the demo itself relies on; the model and the optimizers check the rest.
    pub fn validate(&self) -> Result<()> {
        let count = |name: &'static str, value: usize, max: usize| {
            if (1..=max).contains(&value) {
                Ok(())
            } else {
                Err(Error::InvalidParameter {
                    name,
                    value: value as f64,
                    requirement: "at least 1 and within the demo's limit",
                })
            }
        };
        count("steps", self.steps, MAX_STEPS)?;
        count(
            "points_per_class",
            self.points_per_class,
            MAX_POINTS_PER_CLASS,
        )?;
        count("sophia_every", self.sophia_every, MAX_STEPS)
    }
}

/// One optimizer's state in the race.
enum Optimizer {
    SophiaG(Box<SophiaG>),
    AdaHessian(Box<AdaHessian>),
    AdamW(Box<AdamW>),
}

struct Runner {
    name: &'static str,
    optimizer: Optimizer,
    params: GpuVec<f32>,
    grad: GpuVec<f32>,
    loss: GpuVec<f32>,
    /// Loss before each step, one slot per step of the race, and after the last.
    history: GpuVec<f32>,
    /// Training accuracy at the parameters after the latest chunk.
    accuracy: GpuVec<f32>,
}

impl Runner {
    /// Copies the loss just recorded into slot `t` of the history.
    fn record_loss_copy(&self, encoder: &mut curvgpu::wgpu::CommandEncoder, t: usize) {
        encoder.copy_buffer_to_buffer(
            self.loss.buffer(),
            self.loss.byte_offset(),
            self.history.buffer(),
            self.history.byte_offset() + 4 * t as u64,
            4,
        );
    }
}

/// What a chunk of steps produced, per optimizer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Steps taken so far (all optimizers take the same number).
    pub step: usize,
    /// Per optimizer, in the order SophiaG, AdaHessian, AdamW.
    pub runs: Vec<RunProgress>,
}

/// One optimizer's losses so far.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunProgress {
    /// `"SophiaG"`, `"AdaHessian"` or `"AdamW"`.
    pub name: String,
    /// Loss before each step taken so far (full-batch mean cross-entropy), and once the race
    /// is over the loss after its last step: `steps + 1` values in all.
    pub losses: Vec<f32>,
    /// First step whose loss is at or below the target, if reached.
    pub steps_to_target: Option<usize>,
    /// Training accuracy at the current parameters.
    pub accuracy: f32,
}

/// Three optimizers on one model and dataset.
pub struct Race {
    gpu: Rc<Gpu>,
    config: RaceConfig,
    mlp: Mlp,
    runners: Vec<Runner>,
    /// Scratch of AdaHessian's probe: z and z⊙H·z.
    probe: [GpuVec<f32>; 2],
    sampled: GpuVec<f32>,
    step: usize,
}

impl Race {
    /// Builds the dataset, the model and the three optimizers from one initial parameter vector.
    pub fn new(gpu: Rc<Gpu>, config: RaceConfig) -> Result<Self> {
        config.validate()?;
        let data = spirals(
            config.points_per_class,
            config.classes,
            config.noise,
            config.seed,
        )?;
        let shape = MlpShape {
            inputs: 2,
            hidden: config.hidden,
            classes: config.classes,
        };
        let mlp = Mlp::new(&gpu, shape, &data)?;
        let p = mlp.param_count();
        let init = mlp.init_params(config.seed);
        let sophia = SophiaG::new(
            &gpu,
            p,
            SophiaGConfig {
                lr: config.sophia_lr,
                rho: config.sophia_rho,
                weight_decay: 0.0,
                batch_tokens: mlp.samples() as f32,
                ..SophiaGConfig::default()
            },
        )?;
        let adahessian = AdaHessian::new(
            &gpu,
            p,
            AdaHessianConfig {
                lr: config.adahessian_lr,
                ..AdaHessianConfig::default()
            },
        )?;
        let adamw = AdamW::new(
            &gpu,
            p,
            AdamWConfig {
                lr: config.adamw_lr,
                weight_decay: 0.0,
                ..AdamWConfig::default()
            },
        )?;
        let mut runners = Vec::new();
        for (name, optimizer) in [
            ("SophiaG", Optimizer::SophiaG(Box::new(sophia))),
            ("AdaHessian", Optimizer::AdaHessian(Box::new(adahessian))),
            ("AdamW", Optimizer::AdamW(Box::new(adamw))),
        ] {
            runners.push(Runner {
                name,
                optimizer,
                params: GpuVec::upload(&gpu, &init)?,
                grad: GpuVec::zeros(&gpu, p)?,
                loss: GpuVec::zeros(&gpu, 1)?,
                history: GpuVec::zeros(&gpu, config.steps + 1)?,
                accuracy: GpuVec::zeros(&gpu, 1)?,
            });
        }
        Ok(Race {
            probe: [GpuVec::zeros(&gpu, p)?, GpuVec::zeros(&gpu, p)?],
            sampled: GpuVec::zeros(&gpu, p)?,
            mlp,
            runners,
            step: 0,
            config,
            gpu,
        })
    }

    /// The configuration this race runs.
    pub fn config(&self) -> &RaceConfig {
        &self.config
    }

    /// Steps taken so far.
    pub fn step(&self) -> usize {
        self.step
    }

    /// Whether every step of the race has been taken.
    pub fn finished(&self) -> bool {
        self.step >= self.config.steps
    }

    /// Takes up to `steps` more steps with every optimizer (one submission), then reads the
    /// losses so far. The chunk that ends the race also records the loss after its last step.
    pub async fn advance(&mut self, steps: usize) -> Result<Progress> {
        let gpu = Rc::clone(&self.gpu);
        let end = self.step.saturating_add(steps).min(self.config.steps);
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        for t in self.step..end {
            for r in 0..self.runners.len() {
                let mut rec = Recorder::new(&gpu);
                self.record_step(&mut rec, r, t)?;
                rec.encode(&mut encoder);
                self.runners[r].record_loss_copy(&mut encoder, t);
            }
        }
        if end == self.config.steps && self.step < end {
            for runner in &self.runners {
                let mut rec = Recorder::new(&gpu);
                self.mlp
                    .record_loss_grad(&mut rec, &runner.params, &runner.loss, &runner.grad)?;
                rec.encode(&mut encoder);
                runner.record_loss_copy(&mut encoder, end);
            }
        }
        // The accuracies ride in the same submission: the readbacks that follow are all.
        for runner in &self.runners {
            let mut rec = Recorder::new(&gpu);
            self.mlp
                .record_accuracy(&mut rec, &runner.params, &runner.accuracy)?;
            rec.encode(&mut encoder);
        }
        gpu.submit("race", || vec![encoder.finish()])?;
        self.step = end;
        self.read_progress().await
    }

    /// The losses so far and the accuracies [`Race::advance`] recorded.
    async fn read_progress(&self) -> Result<Progress> {
        let mut runs = Vec::new();
        for runner in &self.runners {
            let accuracy = runner.accuracy.read_async().await?[0];
            let mut losses = runner.history.read_async().await?;
            losses.truncate(self.step + usize::from(self.finished()));
            let steps_to_target = losses.iter().position(|&l| l <= self.config.target_loss);
            runs.push(RunProgress {
                name: runner.name.to_string(),
                losses,
                steps_to_target,
                accuracy,
            });
        }
        Ok(Progress {
            step: self.step,
            runs,
        })
    }

    /// Step `t` (0-based; the optimizers' step number t + 1) of runner `r`: the loss and
    /// gradient, then the optimizer's own work.
    fn record_step(&mut self, rec: &mut Recorder, r: usize, t: usize) -> Result<()> {
        let seed = self.config.seed;
        let step = t as u64 + 1;
        let (mlp, runner) = (&self.mlp, &mut self.runners[r]);
        mlp.record_loss_grad(rec, &runner.params, &runner.loss, &runner.grad)?;
        match &mut runner.optimizer {
            Optimizer::SophiaG(opt) => {
                // The paper refreshes the Gauss-Newton-Bartlett estimate every k steps, from
                // the gradient at labels sampled from the model itself.
                if t.is_multiple_of(self.config.sophia_every.max(1)) {
                    mlp.record_sampled_grad(rec, &runner.params, seed ^ t as u64, &self.sampled)?;
                    opt.record_refresh_from_sampled_grads(rec, &self.sampled)?;
                }
                opt.record_step(rec, step, &runner.params, &runner.grad)
            }
            Optimizer::AdaHessian(opt) => {
                let [z, zhz] = &self.probe;
                let p = z.len() as u64;
                curvgpu::rng::record_rademacher(rec, z.view(), seed, t as u64 * p)?;
                mlp.record_hutchinson_probe(rec, &runner.params, z, zhz)?;
                opt.record_step(rec, step, &runner.params, (&runner.grad, zhz))
            }
            Optimizer::AdamW(opt) => opt.record_step(rec, step, &runner.params, &runner.grad),
        }
    }
}
