using System.IO.Compression;
using System.Text.RegularExpressions;
using System.Xml.Linq;
using Kestrel.Transport.IoUring.Tests.Infrastructure;

namespace Kestrel.Transport.IoUring.Tests.Packaging;

/// <summary>What `dotnet pack` produces: the package a user installs, and its symbols package.</summary>
[Collection(PublishCollection.Name)]
public sealed partial class PackageTests
{
    [Fact]
    public async Task ThePackageCarriesItsOwnReadmeRealAuthorsAndASymbolsPackage()
    {
        string output = Path.Combine(Path.GetTempPath(), $"iouring-pack-{Environment.ProcessId}");
        try
        {
            using (var pack = ChildProcess.Start("dotnet",
                // --no-build: packs the Release build the tests run against, and never rebuilds it under them.
                ["pack", RepositoryPaths.Combine("src", "Kestrel.Transport.IoUring", "Kestrel.Transport.IoUring.csproj"), "-c", "Release",
                 "--no-build", "-o", output], workingDirectory: RepositoryPaths.Root))
            {
                Assert.True(await pack.WaitForExitAsync(TimeSpan.FromMinutes(4)) == 0, pack.Output);
            }

            string nupkg = Assert.Single(Directory.GetFiles(output, "Kestrel.Transport.IoUring.*.nupkg"));
            Assert.Single(Directory.GetFiles(output, "Kestrel.Transport.IoUring.*.snupkg"));
            using var zip = ZipFile.OpenRead(nupkg);

            XDocument nuspec = XDocument.Load(zip.Entries.Single(e => e.FullName.EndsWith(".nuspec", StringComparison.Ordinal)).Open());
            XNamespace ns = nuspec.Root!.Name.Namespace;
            var metadata = nuspec.Root.Element(ns + "metadata")!;
            Assert.Equal("Kestrel.Transport.IoUring contributors", (string?)metadata.Element(ns + "authors"));
            Assert.Equal("README.md", (string?)metadata.Element(ns + "readme"));

            string readme = new StreamReader(zip.GetEntry("README.md")!.Open()).ReadToEnd();
            Assert.Contains("dotnet add package Kestrel.Transport.IoUring", readme);
            Assert.Contains("UseIoUring()", readme);
            Assert.DoesNotContain("Fresh machine", readme); // the contributors' README stays in the repository
            var relativeLinks = MarkdownLink().Matches(readme).Select(m => m.Groups[1].Value).Where(target => !target.StartsWith("https://", StringComparison.Ordinal)).ToList();
            Assert.True(relativeLinks.Count == 0, "links that break outside the repository: " + string.Join(", ", relativeLinks));

            Assert.NotNull(zip.GetEntry("CHANGELOG.md"));
            Assert.NotNull(zip.GetEntry("lib/net10.0/Kestrel.Transport.IoUring.dll"));
        }
        finally
        {
            if (Directory.Exists(output)) Directory.Delete(output, recursive: true);
        }
    }

    [GeneratedRegex(@"\]\(([^)]+)\)")]
    private static partial Regex MarkdownLink();
}
