module hitpool.invalid/benchmarks/collector

go 1.19
