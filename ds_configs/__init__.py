# DeepSpeed presets (zero1.json, ...). The package build maps this folder to ligo_ds.ds_configs, so that an
# installed ligo_ds (a wheel, or `pip install -e .`) carries them; this file only makes that a package.
