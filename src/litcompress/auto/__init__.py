"""``litcompress auto``: search techniques and settings for the fastest model, in the runtime it
will be deployed on, within an accuracy budget (:mod:`litcompress.auto.search`)."""
