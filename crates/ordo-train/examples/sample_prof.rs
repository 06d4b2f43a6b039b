use candle_core::Device;
use ordo_model::{sampler, Decoder, ParamStore, SamplingParams, SamplingPath};
use std::time::Instant;
fn main() {
    let org = std::env::args().nth(1).is_some();
    let cfg = if org {
        let v = serde_json::json!({
            "model_type": "llama", "vocab_size": 32, "hidden_size": 128, "intermediate_size": 344,
            "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4,
            "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "tie_word_embeddings": true});
        ordo_model::ModelConfig::from_json(&v, "x").unwrap()
    } else {
        ordo_train::bench::bench_config()
    };
    let (rows, plen, new) = if org { (128, 40, 30) } else { (16, 8, 128) };
    let params = ParamStore::init(&cfg, 0.02, 0, &Device::Cpu).unwrap();
    let dec = Decoder::new_inference(&cfg, &params).unwrap();
    let prompts: Vec<Vec<u32>> =
        (0..rows).map(|r| (0..plen).map(|i| ((r * 31 + i * 7) % cfg.vocab_size) as u32).collect()).collect();
    let sp = SamplingParams { temperature: 1.0, seed: 1, ..SamplingParams::greedy(new) };
    for _ in 0..5 {
        let t = Instant::now();
        let out = sampler::generate_on(&dec, &prompts, &sp, SamplingPath::Auto).unwrap();
        let n: usize = out.iter().map(Vec::len).sum();
        let a = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let out = sampler::generate_on(&dec, &prompts, &sp, SamplingPath::Tensor).unwrap();
        let n2: usize = out.iter().map(Vec::len).sum();
        println!("{:.0} tok/s  tensor {:.0} tok/s", n as f64 / a, n2 as f64 / t.elapsed().as_secs_f64());
    }
}
