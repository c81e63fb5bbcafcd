# Windows, six-frame translation and ORF filter (the original's outputs, byte
# for byte), then token-balanced shards for the embedding jobs.


rule preprocess:
    input:
        fasta=sample_fasta,
        mate2=sample_mate2,
    output:
        chunked="results/{sample}/preprocess/chunked.fa",
        nucleotide="results/{sample}/preprocess/identified_nucleotide.fa",
        protein="results/{sample}/preprocess/identified_protein.faa",
        records="results/{sample}/preprocess/records.tsv",
        source="results/{sample}/preprocess/input.json",
    log:
        "logs/{sample}/preprocess.log",
    benchmark:
        "logs/benchmarks/{sample}/preprocess.tsv"
    params:
        chunk_length=config["chunk_length"],
        fasta=fasta_fingerprint,
    threads: rule_threads(config, "preprocess")
    resources:
        **rule_resources(config, "preprocess"),
    conda:
        ENV
    message:
        "{wildcards.sample}: cutting {params.chunk_length} bp windows and keeping stop-free frames"
    script:
        "../scripts/preprocess.py"


rule shard:
    input:
        nucleotide=rules.preprocess.output.nucleotide,
        protein=rules.preprocess.output.protein,
    output:
        scatter.embed("results/{{sample}}/shards/{scatteritem}.tsv"),
    log:
        "logs/{sample}/shard.log",
    benchmark:
        "logs/benchmarks/{sample}/shard.tsv"
    threads: rule_threads(config, "shard")
    resources:
        **rule_resources(config, "shard"),
    conda:
        ENV
    script:
        "../scripts/shard.py"
