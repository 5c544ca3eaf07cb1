"""The paper's user study (its Table 4) as a local voting page over a finished run folder.

``assocgan study perceptual RUN_DIR`` prepares the study once and then serves it:

- ``groups.py`` picks the groups (test images spread evenly over the tasks), loads each method's final
  generator from the run's checkpoints and writes every group's images to ``RUN_DIR/perceptual/images/``
  (input, target and one output per method), with ``RUN_DIR/perceptual/groups.json`` saying what they are.
- ``votes.py`` keeps the participants and their votes in ``RUN_DIR/perceptual/votes.sqlite`` (one row per
  vote: participant, group, task, method chosen, the order shown, time), each written in its own
  transaction; a participant votes on a group at most once (a unique key, so two browsers at once count
  once). It also counts them: each method's share of the votes per task, with a Wilson interval.
- ``server.py`` serves the page (standard library ``http.server``): a participant enters a name or code
  and sees one group at a time, the input then the methods' outputs shuffled and unlabelled; a click (or a
  number key) picks the most realistic. The page works without JavaScript (plain forms) and on a phone.

``assocgan report RUN_DIR`` then shows the votes in the paper's Table 4 layout.
"""
