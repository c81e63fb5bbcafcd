# Windows, six-frame translation and ORF filter (the original's outputs, byte
# for byte), then the plan of each batch's token-balanced shards (no frames are
# copied: the embedding jobs read theirs from the identified files).


rule preprocess:
    input:
        fasta=sample_fasta,
        mate2=sample_mate2,
    output:
        **(
            {"chunked": "results/{sample}/preprocess/chunked.fa"}
            if config["output"]["chunked"]
            else {}
        ),
        nucleotide="results/{sample}/preprocess/identified_nucleotide.fa",
        protein="results/{sample}/preprocess/identified_protein.faa",
        records="results/{sample}/preprocess/records.tsv",
        source="results/{sample}/preprocess/input.json",
    log:
        "logs/{sample}/preprocess.log",
    benchmark:
        "logs/benchmarks/{sample}/preprocess.tsv"
    priority: 80
    conda:
        ENV
    threads: rule_threads(config, "preprocess")
    resources:
        **rule_resources(config, "preprocess"),
    params:
        chunk_length=config["chunk_length"],
        fasta=fasta_fingerprint,
    message:
        "{wildcards.sample}: cutting {params.chunk_length} bp windows and keeping stop-free frames"
    script:
        "../scripts/preprocess.py"


rule plan_shards:
    input:
        unpack(batch_files),
    output:
        plan="results/batches/{batch}/shards.tsv",
    log:
        "logs/batches/{batch}/plan_shards.log",
    benchmark:
        "logs/benchmarks/batches/{batch}/plan_shards.tsv"
    priority: 90
    conda:
        ENV
    threads: rule_threads(config, "plan_shards")
    resources:
        **rule_resources(config, "plan_shards"),
    params:
        samples=lambda wildcards: BATCHES[wildcards.batch].samples,
        shards=lambda wildcards: BATCHES[wildcards.batch].shards,
    message:
        "batch {wildcards.batch}: {params.shards} token-balanced shards over {params.samples}"
    script:
        "../scripts/plan_shards.py"
