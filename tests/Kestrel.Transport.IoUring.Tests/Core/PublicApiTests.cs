using System.Reflection;

namespace Kestrel.Transport.IoUring.Tests.Core;

/// <summary>The package's public surface: every public type sits where users look for it.</summary>
public sealed class PublicApiTests
{
    [Fact]
    public void EveryPublicTypeIsInTheRootNamespaceOrHostingForExtensionMethods()
    {
        Type[] exported = typeof(IoUringTransportFactory).Assembly.GetExportedTypes();
        Assert.NotEmpty(exported);
        var misplaced = exported
            .Where(t => !(t.Namespace == "Kestrel.Transport.IoUring"
                || (t.Namespace == "Microsoft.AspNetCore.Hosting" && t.IsAbstract && t.IsSealed && IsExtensionClass(t))))
            .Select(t => t.FullName)
            .ToList();
        Assert.True(misplaced.Count == 0, "public types outside the root namespace: " + string.Join(", ", misplaced));
        Assert.Contains(exported, t => t == typeof(IoUringException));
        Assert.Contains(exported, t => t.FullName == "Microsoft.AspNetCore.Hosting.WebHostBuilderIoUringExtensions");
    }

    private static bool IsExtensionClass(Type t)
        => t.GetMethods(BindingFlags.Public | BindingFlags.Static).Any(m => m.IsDefined(typeof(System.Runtime.CompilerServices.ExtensionAttribute), false));
}
