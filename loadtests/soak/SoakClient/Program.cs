using SoakClient;

// Soak load generator for Kestrel.Transport.IoUring; see ../README.md and ../run-soak.sh.
SoakOptions? options = SoakOptions.Parse(args, out string? error);
if (options is null)
{
    if (error is not null)
    {
        Console.Error.WriteLine(error);
        Console.Error.WriteLine(SoakOptions.Usage);
        return 2;
    }
    Console.WriteLine(SoakOptions.Usage);
    return 0;
}
return await new SoakRunner(options).RunAsync();
