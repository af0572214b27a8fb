using BenchmarkDotNet.Running;
using Kestrel.Transport.IoUring.Benchmarks;

// dotnet run -c Release --project loadtests/Kestrel.Transport.IoUring.Benchmarks -- --filter '*'     BenchmarkDotNet micro-benchmarks
// dotnet run -c Release --project loadtests/Kestrel.Transport.IoUring.Benchmarks -- alloc [--requests N] [--connections C]
//                                                                                                 allocations per request, in-process
if (args.Length > 0 && args[0] == "alloc")
{
    return await AllocationsPerRequest.RunAsync(args[1..]);
}
BenchmarkSwitcher.FromAssembly(typeof(RingBenchmarks).Assembly).Run(args);
return 0;
