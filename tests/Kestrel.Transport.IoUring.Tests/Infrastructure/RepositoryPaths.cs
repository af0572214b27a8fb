namespace Kestrel.Transport.IoUring.Tests.Infrastructure;

/// <summary>Paths in the source tree the tests run from (found by walking up to the solution file).</summary>
public static class RepositoryPaths
{
    public static string Root { get; } = FindRoot();

    public static string Combine(params string[] parts) => Path.Combine([Root, .. parts]);

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Kestrel.Transport.IoUring.sln")))
            {
                return dir.FullName;
            }
        }
        throw new DirectoryNotFoundException($"no Kestrel.Transport.IoUring.sln above {AppContext.BaseDirectory}");
    }
}
