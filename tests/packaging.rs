//! The Dockerfile and the registry-free image path (e2e/images/build) must build the same
//! images: same targets, same static build, same user, entrypoint and paths. There is no
//! Docker engine here to build the Dockerfile, so this compares what each one says.

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_dockerfile_and_the_local_image_path_agree() {
    let dockerfile = read("Dockerfile");
    let build = read("e2e/images/build");
    for image in ["podlife-target", "podlife-operator", "kubectl-podlife"] {
        assert!(dockerfile.contains(&format!("FROM base AS {image}")), "Dockerfile has a {image} target");
        assert!(dockerfile.contains(&format!("ENTRYPOINT [\"/usr/local/bin/{image}\"]")), "{image} entrypoint");
        assert!(dockerfile.contains(&format!("/release/{image} /usr/local/bin/{image}")), "{image} binary path");
        assert!(dockerfile.contains(&format!("org.opencontainers.image.title={image}")));
    }
    assert!(build.contains("for image in podlife-target podlife-operator kubectl-podlife"));
    assert!(build.contains(r#"--entrypoint "/usr/local/bin/$image""#));
    for (what, docker, local) in [
        ("user", "USER 65532:65532", "--user 65532:65532"),
        ("static build", "target-feature=+crt-static", "target-feature=+crt-static"),
        ("target triple", "--target x86_64-unknown-linux-gnu", "triple=x86_64-unknown-linux-gnu"),
        ("/tmp", "chmod 1777 /rootfs/tmp", r#"chmod 1777 "$rootfs/tmp""#),
        ("licence label", "org.opencontainers.image.licenses=Apache-2.0", "org.opencontainers.image.licenses=Apache-2.0"),
    ] {
        assert!(dockerfile.contains(docker), "Dockerfile: {what}");
        assert!(build.contains(local), "e2e/images/build: {what}");
    }
    let version =
        read("Cargo.toml").lines().find_map(|l| l.strip_prefix("version = \"").map(|v| v.trim_end_matches('"').to_string())).unwrap();
    assert!(dockerfile.contains(&format!("ARG VERSION={version}")), "Dockerfile version matches Cargo.toml");
    let chart = read("charts/podlife/Chart.yaml");
    assert!(chart.contains(&format!("appVersion: \"{version}\"")), "chart appVersion matches Cargo.toml");
}
