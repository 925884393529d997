//! Builds the data side of an image run from its config: training streams of images (or
//! image–text pairs), held-out image sets with their probe support sets and zero-shot prompts,
//! and distillation reference images. Every vision architecture in `arch/` assembles its stream
//! from these.

use crate::model_source::model_table;
use crate::run::Stream;
use anyhow::{Context, Result, bail};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use cpt_continual::Experience;
use cpt_continual::strategies::DistillSettings;
use cpt_core::config::{BadShards, ExperienceConfig, HeldOutSet};
use cpt_core::rng::domain;
use cpt_core::{Evaluator, ImageBatch, ImageItem, ItemSource, RunConfig, SplitMix64, TaskModel};
use cpt_data::{
    Augment, CaptionMode, CaptionTokenizer, ImageSourceOptions, ImageTransform, ParquetImageSource,
    Resize, eval_images, expand_paths,
};
use cpt_eval::{ClassPrompts, ImageEvalSet, ProbeScope, ProbeSettings};

/// What the model expects of every image.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    /// Output height and width.
    pub size: usize,
    /// Channels.
    pub channels: usize,
}

/// Which classes and names one image set covers.
struct SetSpec<'a> {
    name: &'a str,
    classes: &'a [i64],
    class_names: &'a [String],
}

impl<'a> SetSpec<'a> {
    fn experience(e: &'a ExperienceConfig) -> Self {
        Self {
            name: &e.name,
            classes: &e.classes,
            class_names: &e.class_names,
        }
    }

    fn held_out(h: &'a HeldOutSet) -> Self {
        Self {
            name: &h.name,
            classes: &h.classes,
            class_names: &h.class_names,
        }
    }

    /// The labels this set's prompts cover: its class filter, else every named class.
    fn labels(&self) -> Vec<i64> {
        if self.classes.is_empty() {
            (0..self.class_names.len() as i64).collect()
        } else {
            self.classes.to_vec()
        }
    }
}

/// The image pipeline of a run: the model's size and channels, the config's normalisation and
/// (for training) augmentations.
fn transform(config: &RunConfig, geometry: Geometry) -> ImageTransform {
    let image = &config.data.image;
    let resize = match image.resize_shortest_edge {
        Some(edge) => Resize::ShortestEdge {
            resize: edge,
            crop: geometry.size,
        },
        None => Resize::Square {
            size: geometry.size,
        },
    };
    ImageTransform {
        channels: geometry.channels,
        resize,
        mean: image.mean.iter().map(|&v| v as f32).collect(),
        std: image.std.iter().map(|&v| v as f32).collect(),
        augment: Augment {
            horizontal_flip: image.hflip,
            random_resized_crop: image.random_resized_crop,
        },
    }
}

/// Source options for one set; captions only when the model reads text.
fn options(
    config: &RunConfig,
    geometry: Geometry,
    set: &SetSpec<'_>,
    captions: Option<&CaptionTokenizer>,
    seed: u64,
) -> Result<ImageSourceOptions> {
    let image = &config.data.image;
    let caption_mode = match (captions, &image.caption_column) {
        (None, _) => CaptionMode::None,
        (Some(_), Some(_)) => CaptionMode::Column,
        (Some(_), None) => {
            if set.class_names.is_empty() {
                bail!(
                    "set `{}`: image–text training without `data.image.caption_column` builds captions from `class_names`, which is empty",
                    set.name
                );
            }
            CaptionMode::Template {
                template: image.caption_template.clone(),
                class_names: set.class_names.to_vec(),
            }
        }
    };
    Ok(ImageSourceOptions {
        image_column: image.image_column.clone(),
        label_column: Some(image.label_column.clone()),
        caption_column: image.caption_column.clone(),
        classes: (!set.classes.is_empty()).then(|| set.classes.to_vec()),
        shuffle: config.data.shuffle,
        seed,
        quarantine_bad_shards: config.data.bad_shards == BadShards::Quarantine,
        transform: transform(config, geometry),
        captions: caption_mode,
        caption_tokenizer: captions.cloned(),
    })
}

/// Training streams of every experience, each checked by drawing one image.
pub fn training_streams(
    config: &RunConfig,
    geometry: Geometry,
    captions: Option<&CaptionTokenizer>,
) -> Result<Vec<Experience<ImageItem>>> {
    let mut experiences = Vec::new();
    for (i, (e, steps)) in config
        .experiences
        .iter()
        .zip(config.experience_steps())
        .enumerate()
    {
        let seed =
            SplitMix64::derive(config.seed, &[domain::TRAINING_DATA, i as u64, 0]).next_u64();
        let context = || format!("training data of experience `{}`", e.name);
        let options = options(config, geometry, &SetSpec::experience(e), captions, seed)
            .with_context(context)?;
        let paths = expand_paths(&e.train).with_context(context)?;
        let mut source = ParquetImageSource::open(&paths, options).with_context(context)?;
        // Draw one image and rewind, so an empty or undecodable stream fails before the run
        // directory exists.
        let start = ItemSource::cursor(&source);
        source.next_item().with_context(context)?;
        ItemSource::seek(&mut source, &start).with_context(context)?;
        experiences.push(Experience {
            name: e.name.clone(),
            steps,
            source: Box::new(source),
        });
    }
    Ok(experiences)
}

/// Held-out sets: every experience's eval images (with a probe support set from its training
/// files when `eval.support_images` > 0), then `eval.held_out`. Returns the sets and the names
/// of the held-out ones.
pub fn eval_sets(
    config: &RunConfig,
    geometry: Geometry,
    captions: Option<&CaptionTokenizer>,
) -> Result<(Vec<ImageEvalSet>, Vec<String>)> {
    let mut sets = Vec::new();
    for e in &config.experiences {
        let spec = SetSpec::experience(e);
        sets.push(eval_set(
            config, geometry, &spec, &e.eval, &e.train, captions,
        )?);
    }
    let mut held_out = Vec::new();
    for h in &config.eval.held_out {
        let spec = SetSpec::held_out(h);
        // Held-out sets are never trained on; their probes fit on their own first images,
        // so a probe score there measures features, not memory.
        sets.push(eval_set(
            config, geometry, &spec, &h.files, &h.files, captions,
        )?);
        held_out.push(h.name.clone());
    }
    Ok((sets, held_out))
}

fn eval_set(
    config: &RunConfig,
    geometry: Geometry,
    spec: &SetSpec<'_>,
    eval_files: &[String],
    support_files: &[String],
    captions: Option<&CaptionTokenizer>,
) -> Result<ImageEvalSet> {
    let context = || format!("eval set `{}`", spec.name);
    let batch = config.eval.batch_size.max(1);
    let options = options(config, geometry, spec, captions, 0).with_context(context)?;
    let images = eval_images(
        &expand_paths(eval_files).with_context(context)?,
        options.clone(),
        config.eval.max_images,
    )
    .with_context(context)?;
    let support = match config.eval.support_images {
        0 => Vec::new(),
        n => eval_images(
            &expand_paths(support_files).with_context(context)?,
            options,
            n,
        )
        .with_context(|| format!("probe support images of `{}`", spec.name))?,
    };
    let prompts = match captions {
        Some(tokenizer) => Some(class_prompts(config, spec, tokenizer).with_context(context)?),
        None => None,
    };
    Ok(ImageEvalSet {
        name: spec.name.to_string(),
        batches: images.chunks(batch).map(ImageBatch::from_images).collect(),
        support: support.chunks(batch).map(ImageBatch::from_images).collect(),
        prompts,
    })
}

/// One prompt per class of the set, from the caption template and the class names.
fn class_prompts(
    config: &RunConfig,
    spec: &SetSpec<'_>,
    tokenizer: &CaptionTokenizer,
) -> Result<ClassPrompts> {
    let labels = spec.labels();
    if labels.is_empty() {
        bail!("zero-shot prompts need `class_names`");
    }
    let mut tokens = Vec::new();
    for &label in &labels {
        let Some(name) = usize::try_from(label)
            .ok()
            .and_then(|l| spec.class_names.get(l))
        else {
            bail!(
                "class {label} has no name in `class_names` ({} names)",
                spec.class_names.len()
            );
        };
        let prompt = config.data.image.caption_template.replace("{label}", name);
        tokens.extend(tokenizer.encode(&prompt)?);
    }
    Ok(ClassPrompts {
        labels,
        tokens,
        text_len: tokenizer.text_len,
    })
}

/// The probes' settings of a run.
pub fn probe_settings(config: &RunConfig) -> ProbeSettings {
    ProbeSettings {
        scope: match config.eval.probe_scope.as_str() {
            "all_sets" => ProbeScope::AllSets,
            _ => ProbeScope::PerSet,
        },
        ..ProbeSettings::default()
    }
}

/// Distillation reference images (`distill.reference`), seeded apart from the training streams.
fn reference_images(
    config: &RunConfig,
    geometry: Geometry,
    captions: Option<&CaptionTokenizer>,
) -> Result<Option<Box<dyn ItemSource<ImageItem>>>> {
    let distill: DistillSettings = cpt_continual::settings(config)?;
    if distill.reference.is_empty() {
        return Ok(None);
    }
    let context = || "distillation reference data (`distill.reference`)".to_string();
    let seed = SplitMix64::derive(config.seed, &[domain::DISTILL_REFERENCE, 0]).next_u64();
    // Reference images keep every class; captions from a template name them as the first
    // experience does (the pre-training domain a ZSCL-style reference set stands for).
    let spec = SetSpec {
        name: "reference",
        classes: &[],
        class_names: &config.experiences[0].class_names,
    };
    let options = options(config, geometry, &spec, captions, seed).with_context(context)?;
    let paths = expand_paths(&distill.reference).with_context(context)?;
    let source = ParquetImageSource::open(&paths, options).with_context(context)?;
    Ok(Some(Box::new(source)))
}

/// `[model.config]` of a run without `model.from`, as the architecture's config type.
pub fn model_config<C: serde::de::DeserializeOwned>(config: &RunConfig) -> Result<C> {
    let table = config
        .model
        .config
        .as_ref()
        .expect("validate() requires `config` without `from`");
    model_table(table)
}

/// What every vision architecture's stream is made of, in the order they are checked: eval sets
/// (handed to `evaluator`), training streams, distillation reference images.
pub fn image_stream<B, M>(
    config: &RunConfig,
    model: M,
    geometry: Geometry,
    captions: Option<&CaptionTokenizer>,
    lora_targets: Vec<&'static str>,
    evaluator: impl FnOnce(Vec<ImageEvalSet>) -> Result<Box<dyn Evaluator<M::InnerModule>>>,
) -> Result<Stream<B, M>>
where
    B: AutodiffBackend,
    M: TaskModel<B, Batch = ImageBatch> + AutodiffModule<B>,
{
    let (sets, held_out) = eval_sets(config, geometry, captions)?;
    Ok(Stream {
        model,
        evaluator: evaluator(sets)?,
        experiences: training_streams(config, geometry, captions)?,
        reference: reference_images(config, geometry, captions)?,
        lora_targets,
        held_out,
        tasks: Vec::new(),
        unit: "images",
        stage_setup: None,
        trainable: None,
    })
}

/// The checks every image architecture makes of a run config.
pub fn validate(run: &RunConfig) -> Result<()> {
    if !run.eval.tasks.is_empty() {
        bail!("config key `eval.tasks`: downstream tasks score language models");
    }
    for (i, e) in run.experiences.iter().enumerate() {
        if e.tokens.is_some() || !e.mixture.is_empty() {
            let key = if e.tokens.is_some() {
                "tokens"
            } else {
                "mixture"
            };
            bail!(
                "config key `experiences[{i}].{key}`: image streams take `train` files and a `steps` budget"
            );
        }
        let text_only = [
            ("seq_len", e.seq_len.is_some()),
            ("rope_theta", e.rope_theta.is_some()),
            ("rope_scaling", e.rope_scaling.is_some()),
            ("long_doc_ratio", e.long_doc_ratio.is_some()),
        ];
        if let Some((key, _)) = text_only.iter().find(|(_, set)| *set) {
            bail!("config key `experiences[{i}].{key}`: applies to language models only");
        }
    }
    Ok(())
}
