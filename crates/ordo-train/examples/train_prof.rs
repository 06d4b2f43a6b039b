use candle_core::Device;
use ordo_model::decoder::ids_tensor;
use ordo_model::{ops, Decoder, OpPath, ParamStore};
use ordo_train::optim::{AdamW, AdamWConfig, Gradients};
use std::time::Instant;
fn main() {
    let v = serde_json::json!({
        "model_type": "llama", "vocab_size": 32, "hidden_size": 128, "intermediate_size": 344,
        "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4,
        "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "tie_word_embeddings": true});
    let cfg = ordo_model::ModelConfig::from_json(&v, "x").unwrap();
    let device = Device::Cpu;
    let params = ParamStore::init(&cfg, 0.02, 0, &device).unwrap();
    let rows: Vec<Vec<u32>> = (0..96).map(|r| (0..64).map(|i| ((r * 31 + i * 7) % 32) as u32).collect()).collect();
    let ids = ids_tensor(&rows, &device).unwrap();
    let mut opt = AdamW::new(AdamWConfig::default());
    for _ in 0..12 {
        let t = Instant::now();
        let dec = Decoder::new(&cfg, &params).unwrap();
        let logits = dec.forward(&ids, None, OpPath::Differentiable).unwrap();
        let loss = ops::next_token_loss(&logits, &ids, None).unwrap();
        let t1 = t.elapsed().as_secs_f64();
        let mut grads = Gradients::from_backward(&params, &loss.backward().unwrap());
        let t2 = t.elapsed().as_secs_f64();
        grads.clip(1.0).unwrap();
        opt.step(&params, &grads, 1e-3).unwrap();
        println!("step {:.0} ms (fwd {:.0}, bwd {:.0})", t.elapsed().as_secs_f64() * 1e3, t1 * 1e3, (t2 - t1) * 1e3);
    }
}
