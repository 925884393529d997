//! Tiny configs of every model, for the unit tests.

use crate::clip::{ClipConfig, ClipTextConfig, ClipVisionConfig};
use crate::{LlamaConfig, ViTConfig, ViTMAEConfig};

pub fn llama() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 32,
        hidden_size: 8,
        intermediate_size: 16,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        num_key_value_heads: Some(1),
        head_dim: None,
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-6,
        max_position_embeddings: 16,
        tie_word_embeddings: false,
        attention_bias: true,
        mlp_bias: true,
        initializer_range: 0.3,
        rope_scaling: None,
    }
}

pub fn vit() -> ViTConfig {
    ViTConfig {
        hidden_size: 8,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        intermediate_size: 16,
        hidden_act: "gelu".into(),
        layer_norm_eps: 1e-12,
        image_size: 8,
        patch_size: 4,
        num_channels: 3,
        qkv_bias: true,
        num_labels: 3,
        initializer_range: 0.1,
    }
}

pub fn mae() -> ViTMAEConfig {
    serde_json::from_value(serde_json::json!({
        "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 16, "image_size": 8, "patch_size": 4,
        "decoder_num_attention_heads": 2, "decoder_hidden_size": 12,
        "decoder_num_hidden_layers": 2, "decoder_intermediate_size": 16,
        "initializer_range": 0.07,
    }))
    .expect("a valid ViTMAEConfig")
}

pub fn clip() -> ClipConfig {
    ClipConfig {
        text_config: ClipTextConfig {
            vocab_size: 32,
            hidden_size: 8,
            intermediate_size: 16,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            max_position_embeddings: 8,
            eos_token_id: 3,
            ..Default::default()
        },
        vision_config: ClipVisionConfig {
            hidden_size: 12,
            intermediate_size: 16,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            image_size: 8,
            patch_size: 4,
            initializer_range: 0.05,
            ..Default::default()
        },
        projection_dim: 4,
        logit_scale_init_value: 2.5,
        initializer_factor: 1.3,
    }
}
