"""Images in, arrays out: what data.source can be (sources, folder_listing), decoding image files
(image_files, opencv, decode_cache), data/raw's shards (shards), near-duplicates, the files that
flow between stages (artifacts) and the preprocessing contract (image_format, preprocessing).
"""
