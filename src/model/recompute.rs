//! Activation recomputation at layer boundaries (TRL's `gradient_checkpointing`).
//!
//! A decoder built with a [`Recompute`] runs each layer of a training forward without an
//! autograd graph, so only the layer's input is kept (one (N, H) tensor per layer instead of the
//! attention scores, MLP activations and every intermediate). Its backward
//! ([`super::ops::grad_hook`]) re-runs the layer with a graph from that input and back-propagates
//! the incoming gradient through it: the input's gradient goes on down the outer backward, the
//! weights' gradients are collected here, and the caller adds them to the outer gradients with
//! [`Recompute::take`] once `loss.backward()` returns.
//!
//! The re-run is the same computation on the same input (dropout masks are functions of a seed),
//! so loss and gradients equal those without recomputation (`tests/integration/lora.rs`).

use std::sync::{Arc, Mutex};

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};

use super::ops::grad_hook;

/// A layer's forward as a function of its input rows alone; `graph` says whether its weights
/// record a graph (false: the weights' detached views, nothing is kept).
pub type LayerFn = Arc<dyn Fn(&Tensor, bool) -> Result<Tensor> + Send + Sync>;

/// Where recomputed layers put their weights' gradients. Clones share the store.
#[derive(Clone)]
pub struct Recompute {
    /// The tensors whose gradients are kept (the model's variables); everything else a layer's
    /// backward produces is dropped with it.
    vars: Arc<Vec<Tensor>>,
    store: Arc<Mutex<GradStore>>,
}

impl Recompute {
    pub fn new(vars: Vec<Var>) -> Self {
        Self {
            vars: Arc::new(vars.iter().map(|v| v.as_tensor().clone()).collect()),
            store: Arc::new(Mutex::new(GradStore::default())),
        }
    }

    /// Runs `f` on `x` keeping nothing inside; the backward recomputes it. Falls back to the
    /// plain forward where the hook cannot run (not CPU).
    pub fn layer(&self, x: &Tensor, f: LayerFn) -> Result<Tensor> {
        if !grad_hook::supported(x) {
            return f(x, true);
        }
        // The layer's weights may train although its input does not (layer 0 of a LoRA model,
        // whose embedding is frozen): the hook needs a tracked input to be called at all.
        let x = if x.track_op() {
            x.clone()
        } else {
            Var::from_tensor(x)?.into_inner()
        };
        let kept = x.detach(); // the one activation kept (shares x's storage)
        let y = f(&kept, false)?;
        let me = self.clone();
        grad_hook::with_backward(
            &x,
            y,
            Arc::new(move |g: &Tensor| {
                let xv = Var::from_tensor(&kept)?;
                let y = f(xv.as_tensor(), true)?;
                let mut grads = (y * g.detach())?.sum_all()?.backward()?;
                let gx = match grads.remove(xv.as_tensor()) {
                    Some(gx) => gx,
                    None => xv.as_tensor().zeros_like()?,
                };
                me.collect(&grads)?;
                Ok(gx)
            }),
        )
    }

    fn collect(&self, grads: &GradStore) -> Result<()> {
        let mut store = self
            .store
            .lock()
            .map_err(|_| candle_core::Error::Msg("recompute: poisoned".into()))?;
        for v in self.vars.iter() {
            if let Some(g) = grads.get(v) {
                let sum = match store.get(v) {
                    Some(s) => (s + g)?,
                    None => g.clone(),
                };
                store.insert(v, sum);
            }
        }
        Ok(())
    }

    /// The weights' gradients collected so far (the store is left empty).
    pub fn take(&self) -> Result<GradStore> {
        let mut store = self
            .store
            .lock()
            .map_err(|_| candle_core::Error::Msg("recompute: poisoned".into()))?;
        Ok(std::mem::take(&mut *store))
    }
}
