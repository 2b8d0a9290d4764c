//! Deploy stories that run on both store backends: `tests/deploy_story.rs` runs them on
//! SQLite, `tests/postgres.rs` on PostgreSQL. Each takes a started [`Story`].
#![allow(dead_code)]

use std::time::Duration;

use crate::story_support::{self, Story};
use crate::support;
use crate::support::fake_gitlab::FakeGitlab;

/// v1.0.0 deploys and converges, v1.1.0 updates the same service, v1.0.1 is refused as a
/// downgrade, and repeated or stale hooks start nothing new.
pub async fn release_tags_deploy_update_and_never_go_backwards(story: &Story) {
    let world = &story.world;

    // v1.0.0: manifest played, index verified, deploy played, service created at the digest.
    let v1 = world.push_tag("acme/shop", "v1.0.0", true).await;
    let run = story.finished_run(&v1.sha).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let steps: Vec<(&str, &str)> = run["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or(""),
                s["state"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("manifest", "succeeded"),
            ("verify", "succeeded"),
            ("deploy-job", "succeeded"),
            ("swarm", "succeeded"),
            ("converge", "succeeded"),
            ("report", "succeeded")
        ]
    );
    let digest = run["digest"].as_str().expect("digest").to_string();
    assert!(digest.starts_with("sha256:"));
    assert_eq!(
        story.service_image(),
        format!("{}:v1.0.0@{digest}", story.image)
    );
    assert_eq!(world.job(v1.pipeline_id, "manifest").status, "success");
    assert_eq!(world.job(v1.pipeline_id, "deploy").status, "success");
    assert_eq!(world.calls("jobs/:id/play"), 2, "{:#?}", world.call_log());
    world
        .wait_for(|w| w.commit_comments(&v1.sha).len() == 2)
        .await;
    let comments = world.commit_comments(&v1.sha);
    assert!(
        comments[1].contains(&digest),
        "final comment names the digest: {}",
        comments[1]
    );
    assert!(
        comments[1].contains(&format!("/acme/shop/-/pipelines/{}", v1.pipeline_id.0)),
        "final comment links the pipeline: {}",
        comments[1]
    );
    world
        .wait_for(|w| {
            w.statuses(&v1.sha)
                .iter()
                .any(|s| s.name == "hoist/production" && s.state == "success")
        })
        .await;
    let (id1, version1) = story.service_id_version();

    // v1.1.0 updates the same service.
    let v11 = world.push_tag("acme/shop", "v1.1.0", true).await;
    let run = story.finished_run(&v11.sha).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let (id2, version2) = story.service_id_version();
    assert_eq!(id1, id2, "same service");
    assert!(version2 > version1, "{version1} → {version2}");
    assert!(story.service_image().contains(":v1.1.0@sha256:"));

    // v1.0.1 is older than what is live: refused, nothing played, the service untouched.
    let v101 = world.push_tag("acme/shop", "v1.0.1", true).await;
    let run = story.finished_run(&v101.sha).await;
    assert_eq!(run["state"], "refused", "{run:#}");
    assert!(
        run["error"].as_str().unwrap_or("").contains("v1.1.0"),
        "{run:#}"
    );
    assert_eq!(world.job(v101.pipeline_id, "manifest").status, "manual");
    assert_eq!(story.service_id_version(), (id2, version2));
    world
        .wait_for(|w| w.commit_comments(&v101.sha).len() == 1)
        .await;

    // A stale and a repeated pipeline hook for v1.1.0 start nothing new.
    world.announce_pipeline(v11.pipeline_id).await;
    world.flush().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let for_v11 = story
        .runs()
        .await
        .into_iter()
        .filter(|r| r["sha"] == v11.sha.as_str())
        .count();
    assert_eq!(for_v11, 1, "one run per commit");
}

/// `/deploy` on merge requests: refusals (role, policy, typo, code block, fork) and a
/// developer's deploy of the MR head to staging, reacted to and never repeated by an edit.
pub async fn deploy_comments_on_merge_requests(story: &Story) {
    use support::fake_gitlab::{DEVELOPER, REPORTER};
    let world = &story.world;
    world.add_member("acme/shop", "dave", DEVELOPER);
    world.add_member("acme/shop", "rita", REPORTER);
    let mr = world
        .open_mr("acme/shop", "acme/shop", "feature-x", "dave")
        .await;
    let replies = |n: usize| {
        move |w: &FakeGitlab| {
            w.mr_notes(mr.iid)
                .iter()
                .filter(|x| x.author == support::fake_gitlab::BOT_USERNAME)
                .count()
                >= n
        }
    };

    // A reporter is refused, with a reason and an x.
    let note = world.comment_on_mr(mr.iid, "rita", "/deploy staging").await;
    world.wait_for(replies(1)).await;
    world
        .wait_for(|w| w.reactions(note).contains(&"x".to_string()))
        .await;
    let bot_notes = |w: &FakeGitlab| story_support::bot_notes(w, mr.iid);
    assert!(
        bot_notes(world)
            .last()
            .is_some_and(|b| b.contains("reporter") && b.contains("developer")),
        "{:#?}",
        bot_notes(world)
    );

    // A tag-policy environment is refused; a typo gets a did-you-mean.
    world
        .comment_on_mr(mr.iid, "dave", "/deploy production")
        .await;
    world.wait_for(replies(2)).await;
    assert!(
        bot_notes(world).last().is_some_and(|b| b.contains("tags")),
        "{:#?}",
        bot_notes(world)
    );
    world.comment_on_mr(mr.iid, "dave", "/deploy stagign").await;
    world.wait_for(replies(3)).await;
    assert!(
        bot_notes(world)
            .last()
            .is_some_and(|b| b.contains("staging")),
        "{:#?}",
        bot_notes(world)
    );

    // A command inside a code block is not a command.
    world
        .comment_on_mr(mr.iid, "dave", "try this:\n```\n/deploy staging\n```")
        .await;

    // A developer deploys the MR head.
    let note = world.comment_on_mr(mr.iid, "dave", "/deploy staging").await;
    // The refused requests were for this commit too: find the deploy itself.
    let run = story
        .final_run_where(|r| {
            r["sha"] == mr.sha.as_str() && r["trigger"] == "mr_comment" && r["state"] != "refused"
        })
        .await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let image = story.image_of(&format!("{}-stg", story.service));
    assert!(
        image
            .trim()
            .starts_with(&format!("{}:{}@sha256:", story.image, &mr.sha[..8])),
        "{image}"
    );
    world
        .wait_for(|w| w.reactions(note).contains(&"rocket".to_string()))
        .await;
    assert!(world.reactions(note).contains(&"eyes".to_string()));

    // Editing the note deploys nothing again.
    world.edit_note(note, "/deploy staging").await;
    world.flush().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let runs = story.runs().await;
    assert_eq!(
        runs.iter()
            .filter(|r| r["trigger"] == "mr_comment" && r["state"] == "succeeded")
            .count(),
        1
    );
    assert_eq!(
        runs.iter().filter(|r| r["state"] == "refused").count(),
        3,
        "{runs:#?}"
    );
    assert_eq!(
        runs.len(),
        4,
        "the code block and the edit made no run: {runs:#?}"
    );

    // A merge request from a fork is refused.
    world.fork("acme/shop", "eve/shop");
    world.add_member("acme/shop", "eve", DEVELOPER);
    let fork_mr = world.open_mr("acme/shop", "eve/shop", "evil", "eve").await;
    let note = world
        .comment_on_mr(fork_mr.iid, "eve", "/deploy staging")
        .await;
    world
        .wait_for(|w| w.reactions(note).contains(&"x".to_string()))
        .await;
    world
        .wait_for(|w| {
            w.mr_notes(fork_mr.iid)
                .iter()
                .any(|x| x.author == support::fake_gitlab::BOT_USERNAME)
        })
        .await;
    let notes: Vec<String> = world
        .mr_notes(fork_mr.iid)
        .into_iter()
        .filter(|x| x.author == support::fake_gitlab::BOT_USERNAME)
        .map(|x| x.body)
        .collect();
    assert!(notes.iter().any(|b| b.contains("fork")), "{notes:#?}");
}
